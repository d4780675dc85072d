"""Stage results as flat MLflow metrics and tags, and the short summary a job prints."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ecopipe import names
from ecopipe.config import Attribution
from ecopipe.hardware import SIMULATED, DeviceProfile
from ecopipe.monitor.busy import BUSY_WARNING
from ecopipe.monitor.energy import Bound, EnergyMeter
from ecopipe.monitor.stats import UNRESOLVED_ADVICE, Band, spread, unresolved
from ecopipe.names import (
    CO2E_PER_1K,
    ENERGY_IT_PER_1K,
    HIGH,
    LOW,
    WATER_PER_1K,
    Metric,
    MetricFamily,
    Tag,
    TagFamily,
)
from ecopipe.reference import water_basis
from ecopipe.results import ESTIMATE, MEASURED, InferenceResult, TrialsStop
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.stages.ess import SustainabilityResult
from ecopipe.stages.impact import EnergyBasis, Footprint, ImpactResult
from ecopipe.units import eng, eng_range, rate


def band_metrics(name: str, band: Band) -> dict[str, float]:
    """A figure and its band as three metrics: `name`, `name_low`, `name_high`."""
    return dict(zip(names.band(name), (band.point, band.low, band.high), strict=True))


def metric_band(metrics: Mapping[str, float], name: str) -> Band:
    """A logged figure's band; a run logged before bands existed reads as its point alone, and a low end
    logged without a high one (an ESS whose low end's CO2e is zero) has no upper bound."""
    point = metrics[name]
    if f"{name}{LOW}" not in metrics:
        return Band(point, point, point)
    return spread((metrics[f"{name}{LOW}"], point, metrics.get(f"{name}{HIGH}", math.inf)))


def _at(metrics: Mapping[str, float], name: str, bound: Bound) -> float:
    if bound is Bound.POINT:
        return metrics[name]
    band = metric_band(metrics, name)
    return band.low if bound is Bound.LOW else band.high


def energy_basis(
    metrics: Mapping[str, float], attribution: Attribution, bound: Bound = Bound.POINT
) -> EnergyBasis:
    """What impact needs, read from inference metrics: the same path for a job and a re-impact. At the
    low or high bound, the energy is that end of its band."""
    name = attribution.value
    return EnergyBasis(
        energy_per_1k_j=_at(metrics, names.energy_per_1k(name), bound),
        energy_per_1k_ci95_j=metrics.get(names.energy_per_1k_ci95(name), math.nan),
        run_energy_j=_at(metrics, names.component(names.run_energy(name), names.TOTAL), bound),
        run_duration_s=metrics[Metric.WINDOW_S],
        samples=int(metrics[Metric.SAMPLES]),
        tokens=int(metrics.get(Metric.TOKENS, 0)),
    )


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {names.component(prefix, key): value for key, value in values.items()}


def _banded(prefix: str, bands: Mapping[str, Band]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, band in bands.items():
        out |= band_metrics(names.component(prefix, key), band)
    return out


def _run_bands(result: InferenceResult, attribution: Attribution, scale: float = 1.0) -> dict[str, Band]:
    """Whole-run energy per component at the three bounds (no CI: one figure per run)."""
    per_bound = [(result.run_energy(attribution, b) * scale).as_dict() for b in Bound]
    return {key: spread(d[key] for d in per_bound) for key in per_bound[0]}


def inference_metrics(result: InferenceResult) -> dict[str, float]:
    metrics: dict[str, float] = {
        Metric.SAMPLES: result.samples,
        Metric.TOKENS_IN: result.tokens_in,
        Metric.TOKENS_OUT: result.tokens_out,
        Metric.TOKENS: result.tokens,
        Metric.TRIALS: len(result.trials),
        Metric.WINDOW_S: result.duration_s,
        Metric.BATCH_SIZE_USED: result.batch_size,
        Metric.THROUGHPUT: result.throughput.mean,
        Metric.THROUGHPUT_CI95: result.throughput.ci95,
        Metric.LATENCY_P50: result.latency_s(50),
        Metric.LATENCY_P90: result.latency_s(90),
        Metric.LATENCY_P99: result.latency_s(99),
        Metric.LOAD_S: result.load.duration_s,
        Metric.LOAD_ENERGY: result.load.energy.total,
        Metric.PARAMETERS: result.facts.parameters,
        Metric.EFFECTIVE_PARAMETERS: result.facts.effective_parameters,
        Metric.IDLE_MEASURED: float(result.idle_measured),
    }
    if math.isfinite(result.other_cpu_load):
        metrics[Metric.OTHER_CPU_LOAD] = result.other_cpu_load
    baseline = result.baseline
    if baseline is not None and baseline.settling is not None and not baseline.reused:  # this job's wait
        settling = baseline.settling
        metrics |= {Metric.SETTLE_S: settling.seconds, Metric.IDLE_SETTLED: float(settling.settled)}
    if result.shared:  # a whole-machine counter charged at the job's share: the whole figure beside it
        metrics[Metric.JOB_CPU_SHARE] = result.job_cpu_share
        machine = result.machine_energy.as_dict()
        metrics |= {names.component(names.MACHINE_ENERGY, c): machine[c] for c in result.shared}
    if result.fit is not None:
        metrics |= {Metric.FIT_S: result.fit.duration_s, Metric.FIT_ENERGY: result.fit.energy.total}
    # Net and idle figures exist only where an idle baseline was taken: never net = gross by default.
    attributions = list(Attribution) if result.idle_measured else [Attribution.gross]
    for attribution in attributions:
        name = attribution.value
        per_1k = result.per_1k_samples(attribution)
        bands = result.per_1k_bands(attribution)
        metrics |= band_metrics(names.energy_per_1k(name), bands[names.TOTAL])
        metrics |= {names.energy_per_1k_ci95(name): per_1k.ci95, names.energy_per_1k_cv(name): per_1k.cv}
        metrics |= _banded(names.energy_per_1k(name), bands)
        metrics |= _banded(names.run_energy(name), _run_bands(result, attribution))
        if result.tokens:
            tokens = _run_bands(result, attribution, 1000 / result.tokens)
            metrics |= _banded(names.energy_per_1k_tokens(name), tokens)
            metrics |= band_metrics(names.energy_per_1k_tokens(name), tokens[names.TOTAL])
    if result.idle_measured:
        metrics |= _prefixed(names.IDLE_ENERGY, result.idle.as_dict())
        idle = [result.idle_power_at(b).as_dict() for b in Bound]
        metrics |= _banded(names.IDLE_POWER, {k: spread(d[k] for d in idle) for k in idle[0]})
    if result.trace is not None:
        metrics |= {
            Metric.MONITOR_OVERHEAD: result.trace.overhead_frac,
            Metric.TRACE_SAMPLES: len(result.trace.samples),
        } | result.trace.peak_memory_mb()
    metrics |= {MetricFamily.QUALITY.of(key): value for key, value in result.quality.items()}
    return metrics


def _footprint(scope: str, fp: Footprint) -> dict[str, float]:
    """A footprint's quantities (names.FOOTPRINT, in that order) at one scope."""
    values = (
        fp.energy_it_j,
        fp.energy_facility_j,
        fp.co2e_g,
        fp.water_onsite_l,
        fp.water_offsite_l,
        fp.water_l,
    )
    return {names.footprint(q, scope): v for q, v in zip(names.FOOTPRINT, values, strict=True)}


def impact_metrics(impact: ImpactResult) -> dict[str, float]:
    factors = impact.factors
    metrics = {
        Metric.CARBON_INTENSITY: factors.carbon_intensity.value,
        Metric.PUE: factors.pue.value,
        Metric.WUE: factors.wue.value,
        Metric.EWIF: factors.ewif.value,
        Metric.CO2E_CI95_PER_1K: impact.per_1k_co2e_ci95_g,
        **_footprint("per_1k", impact.per_1k),
        **_footprint("per_inference", impact.per_inference),
        **_footprint("run", impact.run),
        **_footprint("per_hour", impact.per_hour),
    }
    if impact.per_1k_tokens is not None:
        metrics |= _footprint("per_1k_tokens", impact.per_1k_tokens)
    if impact.embodied_co2e_g_per_1k is not None:
        metrics[Metric.EMBODIED_CO2E_PER_1K] = impact.embodied_co2e_g_per_1k
    return metrics


# Figures that follow the energy (footprints and ESS), not the factors: they carry a band.
_FOLLOW_ENERGY = frozenset(
    {names.footprint(q, s) for q in names.FOOTPRINT for s in names.SCOPES} | {Metric.EMBODIED_CO2E_PER_1K}
)
_ESS = (Metric.ESS, Metric.ESS_RUN, Metric.ECEP)


def stage_metrics(stages: Mapping[Bound, tuple[ImpactResult, SustainabilityResult]]) -> dict[str, float]:
    """Impact and ESS metrics at the point, with `_low` / `_high` beside every figure that follows the
    energy: its ends are the lowest and highest over the three bounds (a lower energy gives a higher ESS)."""
    per_bound = {b: impact_metrics(i) | ess_metrics(e) for b, (i, e) in stages.items()}
    metrics = dict(per_bound[Bound.POINT])
    for key in [k for k in metrics if k in _FOLLOW_ENERGY or k in _ESS]:
        values = [per_bound[b][key] for b in Bound]
        if all(math.isfinite(v) for v in values):
            metrics |= band_metrics(key, spread(values))
        elif key in _ESS and math.isfinite(values[1]) and math.isfinite(values[2]):
            # The low end's CO2e is zero: the ESS has a lowest value and no upper bound (no `_high`).
            metrics[f"{key}{LOW}"] = values[2]
    pue = stages[Bound.POINT][0].factors.pue
    if pue.low is not None and pue.high is not None:
        metrics |= {f"{Metric.PUE}{LOW}": pue.low, f"{Metric.PUE}{HIGH}": pue.high}
    return metrics


# The MLflow UI shows a metric as a bare number: its name carries the unit. Per 1,000 inferences, as
# the summary and the tables; energy in J, CO2e in mg, water in mL (the default job's 2.6e-6 g reads
# 0.0026 mg). One definition: the saved view of the run list (ecopipe.ui_view) shows these columns.
# Short enough for a column header of the run list (its saved view gives them 240 px).
HEADLINE_ENERGY = MetricFamily.HEADLINE.of("energy_J_per_1k")
HEADLINE_CO2E = MetricFamily.HEADLINE.of("co2e_mg_per_1k")
HEADLINE_WATER = MetricFamily.HEADLINE.of("water_mL_per_1k")
HEADLINE_ESS = MetricFamily.HEADLINE.of("ess_Mparams_per_gCO2e")
HEADLINE_THROUGHPUT = MetricFamily.HEADLINE.of("throughput_per_s")
# headline metric -> (logged metric, scale)
_HEADLINE_FIGURES = {
    HEADLINE_ENERGY: (ENERGY_IT_PER_1K, 1.0),
    HEADLINE_CO2E: (CO2E_PER_1K, 1e3),
    HEADLINE_WATER: (WATER_PER_1K, 1e3),
    HEADLINE_ESS: (Metric.ESS, 1.0),
}


def headline_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The answer with its unit in each name: per 1,000 inferences, energy in J, CO2e in mg, water in
    mL; ESS, throughput and headline quality, each to 4 significant digits, the first four with their
    band (`_low`, `_high`) where one was logged. From logged metrics alone, so a re-impact recomputes them."""
    figures: dict[str, float] = {}
    for name, (metric, scale) in _HEADLINE_FIGURES.items():
        if metric not in metrics or not math.isfinite(metrics[metric]):
            continue
        band = metric_band(metrics, metric).scaled(scale)
        figures[name] = band.point
        if f"{metric}{LOW}" in metrics:
            figures |= {f"{name}{LOW}": band.low, f"{name}{HIGH}": band.high}
    figures[HEADLINE_THROUGHPUT] = metrics.get(Metric.THROUGHPUT, math.nan)
    quality = {
        k.removeprefix(MetricFamily.QUALITY): v
        for k, v in metrics.items()
        if k.startswith(MetricFamily.QUALITY)
    }
    figures |= {MetricFamily.HEADLINE.of(k): v for k, v in quality.items() if k in HEADLINE_QUALITY}
    return {k: float(f"{v:.4g}") for k, v in figures.items() if math.isfinite(v)}


def impact_tags(impact: ImpactResult) -> dict[str, str]:
    f = impact.factors
    # An ESS over zero or negative CO2e is not defined: say so rather than leave the metric missing.
    ess = "defined" if impact.per_1k.co2e_g > 0 else f"not defined: {f.attribution.value} CO2e <= 0"
    return {
        Tag.ESS_STATUS: ess,
        Tag.REGION: f.region,
        Tag.REGION_NAME: f.region_name,
        Tag.ATTRIBUTION: f.attribution.value,
        Tag.CARBON_BASIS: f.carbon_basis,
        Tag.CARBON_YEAR: str(f.carbon_intensity.year or "not stated"),
        Tag.WATER_BASIS: water_basis(f.wue, f.ewif),
        TagFamily.FACTOR_SOURCE.of("carbon_intensity"): f.carbon_intensity.source,
        TagFamily.FACTOR_SOURCE.of("pue"): f.pue.source,
        TagFamily.FACTOR_SOURCE.of("wue"): f.wue.source,
        TagFamily.FACTOR_SOURCE.of("ewif"): f.ewif.source,
    }


def ess_metrics(ess: SustainabilityResult) -> dict[str, float]:
    return {
        Metric.ESS: ess.ess,
        Metric.ESS_RUN: ess.ess_run,
        Metric.ECEP: ess.ecep_wh_per_mparam,
        Metric.EFFECTIVE_PARAMS_M: ess.effective_params_m,
    }


def meter_tags(meter: EnergyMeter | InferenceResult, device: str) -> dict[str, str]:
    """How each component's energy is obtained: logged when the meter opens, so that the figures of a
    run that fails mid-measurement still say where they came from."""
    tags = {TagFamily.ENERGY_SOURCE.of(c): s for c, s in meter.sources.items()}
    gpu_missing = device.startswith("cuda") and meter.sources["gpu"] == "none"
    tags[Tag.ENERGY_COMPLETE] = str(not gpu_missing).lower()
    tags |= {TagFamily.ENERGY_MEASURED.of(c): str(m).lower() for c, m in meter.measured.items()}
    tags |= {TagFamily.ENERGY_RESOLUTION.of(c): f"{r:g}" for c, r in meter.resolution_s.items()}
    tags |= {TagFamily.ENERGY_METHOD.of(c): m for c, m in meter.methods.items()}
    tags |= {TagFamily.ENERGY_UNMETERED.of(c): why for c, why in meter.unmetered.items()}
    tags |= {TagFamily.ENERGY_SET_ASIDE.of(c): source for c, source in meter.set_aside.items()}
    tags |= {TagFamily.ENERGY_FALLBACK.of(c): why for c, why in meter.fallbacks.items()}
    tags |= {TagFamily.ENERGY_WHOLE_GPU.of(c): why for c, why in meter.whole_gpu.items()}
    return tags


def mig_tags(share: float | None, meter: EnergyMeter) -> dict[str, str]:
    """Where the GPU is metered whole under MIG: the share of it the job's instance holds."""
    if not meter.whole_gpu:
        return {}
    return {Tag.MIG_SHARE: f"{share:.4g}" if share is not None else "unknown"}


def source_tags(result: InferenceResult) -> dict[str, str]:
    tags = meter_tags(result, result.device)
    if result.idle_measured:
        tags[Tag.NET_NEGATIVE] = str(result.net_negative).lower()
    return tags


def _qualifier(result: InferenceResult, component: str, source: str) -> str:
    """What a component's figure is when it is not a plain measurement: a simulation or an estimate."""
    if "fake" in source:
        return f" {SIMULATED}"
    if component in result.whole_gpu:
        return f" (the WHOLE GPU, not the job's own: {result.whole_gpu[component]})"
    if result.measured[component]:
        return ""
    aside, fallback = result.set_aside.get(component), result.fallbacks.get(component)
    if aside:
        return f" (ESTIMATE: {aside} set aside on request)"
    return f" (ESTIMATE: {fallback})" if fallback else " (ESTIMATE)"


def _energy_label(result: InferenceResult) -> str:
    """Each component's source, with every estimate or simulation called what it is."""
    parts = []
    for component, source in result.sources.items():
        if source != "none":
            parts.append(f"{component} {source}{_qualifier(result, component, source)}")
        elif component == "gpu" and result.device.startswith("cuda"):
            why = result.unmetered.get(component, "no usable sensor")
            parts.append(f"gpu NOT MEASURED ({why}: the total leaves the GPU out)")
    return ", ".join(parts)


def result_tags(result: InferenceResult) -> dict[str, str]:
    """How the figures were obtained, and how the trials ended."""
    return {
        Tag.FIGURES: result.figures_label,
        Tag.TRIALS_STOP: result.trials_stop.value,
    }


def cpu_tags(cpu: CpuPower) -> dict[str, str]:
    """The CPU as identified (hardware.cpu_microarch overrides it) and what an estimate charges it."""
    return {
        Tag.CPU_MICROARCH: cpu.identity.microarch or "unknown",
        Tag.CPU_MICROARCH_HOW: cpu.identity.how,
        Tag.CPU_MICROARCH_NOTE: cpu.identity.note,
        Tag.CPU_POWER_COEFFICIENTS: cpu.note,
    }


PER_1K = "per 1,000 inferences"


def _quoted(band: Band, unit: str, per: str, label: str) -> str:
    """`0.19 µg (0.11–0.34 µg) per 1,000 inferences, ESTIMATE`: a figure as a reader should quote it."""
    ends = "" if band.exact else f" ({eng_range(band.low, band.high, unit)})"
    return f"{eng(band.point, unit)}{ends} {per}, {label}"


def _trials_text(result: InferenceResult, target: float | None) -> str:
    n = len(result.trials)
    if result.trials_stop is TrialsStop.TARGET:
        return f"{n} trials, stopped once the CI was within {target * 100:g}% of the mean"
    if result.trials_stop is TrialsStop.MAX_TRIALS:
        return f"{n} trials: the CI target {target * 100:g}% was NOT reached (monitor.max_trials)"
    return f"{n} trials"


def _ess_text(metrics: Mapping[str, float], label: str, impact: ImpactResult) -> str:
    if math.isfinite(metrics.get(Metric.ESS, math.nan)):
        band = metric_band(metrics, Metric.ESS)
        if band.exact:
            return f"{band.point:.4g}, {label}"
        if math.isinf(band.high):
            return (
                f"{band.point:.4g} (at least {band.low:.3g}: no upper bound, CO2e's band reaches 0), {label}"
            )
        return f"{band.point:.4g} ({band.low:.3g}–{band.high:.3g}), {label}"
    f = impact.factors
    return (
        f"not defined ({f.attribution.value} CO2e {impact.per_1k.co2e_g:.3g} g per 1,000 inferences: "
        "the windows drew no more than the idle baseline)"
    )


# The summary's quality line; every other quality figure is in MLflow.
HEADLINE_QUALITY = ("accuracy", "perplexity", "wer", "r2")


def _pue_text(impact: ImpactResult) -> str:
    pue = impact.factors.pue
    if pue.low is None or pue.high is None:
        return f"PUE {pue.value:.3g}"
    return f"PUE {pue.value:.3g} ({pue.low:.3g}–{pue.high:.3g})"


def _batch_text(result: InferenceResult) -> str:
    asked = result.batch_size_asked
    if asked is None or asked == result.batch_size:
        return str(result.batch_size)
    return f"{result.batch_size}: every sample of the data; batch_size={asked} is larger"


def _baseline_text(result: InferenceResult) -> str:
    """How the idle baseline was taken: the wait for power to settle, or an earlier job's baseline."""
    baseline = result.baseline
    if baseline is not None and baseline.reused:
        return "reused from an earlier job of this process (the same device, model and precision)"
    if baseline is None or baseline.settling is None:
        return "no wait for power to settle"
    return baseline.settling.describe()


def _mib(value: float) -> str:
    return f"{value / 1024:.3g} GiB" if value >= 1024 else f"{value:.3g} MiB"


def _latency_and_memory(result: InferenceResult, metrics: Mapping[str, float]) -> list[str]:
    """What optimum-benchmark's report leads with: latency percentiles per batch and peak memory."""
    lines = []
    if math.isfinite(result.latency_s(50)):
        lines.append(
            f"  latency     per batch of {result.batch_size}: p50 {eng(result.latency_s(50), 's')}, "
            f"p99 {eng(result.latency_s(99), 's')}"
        )
    memory = []
    if Metric.PEAK_RSS in metrics:
        memory.append(f"peak {_mib(metrics[Metric.PEAK_RSS])} resident (the job's main process, sampled)")
    if Metric.PEAK_GPU_MEMORY in metrics:
        memory.append(f"GPU peak {_mib(metrics[Metric.PEAK_GPU_MEMORY])} in use (NVML: every process's)")
    if memory:
        lines.append(f"  memory      {'; '.join(memory)}")
    return lines


def summary(
    name: str,
    profile: DeviceProfile,
    result: InferenceResult,
    impact: ImpactResult,
    metrics: Mapping[str, float],
    data_choice: str,
    target_rel_ci: float | None = None,
    cpu: CpuPower | None = None,
) -> str:
    """The job's answer in a few lines, every quantity in engineering notation (29.4 mJ, 6.03 µg), each
    with its band and a word saying what it is (measured, ESTIMATE, SIMULATED)."""
    f = impact.factors
    label = result.figures_label
    what = "95% CI" if label.startswith(MEASURED) else "band: the coefficients' range and the 95% CI"
    shown = {k: v for k, v in result.quality.items() if k in HEADLINE_QUALITY}
    quality = ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) or (
        "none (random weights)" if result.facts.weights == "random" else "none for this model and data set"
    )
    energy = metric_band(metrics, names.energy_per_1k(f.attribution.value))
    lines = [
        f"ecopipe  {name}  on {profile.name} ({result.device}, tier {profile.tier})",
        f"  data        {data_choice}",
        f"  energy      {_quoted(energy, 'J', PER_1K, label)} ({what}; "
        f"{_trials_text(result, target_rel_ci)}, {f.attribution.value})  [{_energy_label(result)}]",
        f"  CO2e        {_quoted(metric_band(metrics, CO2E_PER_1K), 'g', PER_1K, label)}  "
        f"(region {f.region} {f.region_name}: {f.carbon_intensity.value:.4g} g/kWh {f.carbon_basis}, "
        f"{f.carbon_intensity.year or 'year not stated'}; {_pue_text(impact)})",
        f"  water       {_quoted(metric_band(metrics, WATER_PER_1K), 'L', PER_1K, label)}  "
        f"(on-site WUE {f.wue.value:.3g} L/kWh, EWIF {f.ewif.value:.3g} L/kWh; "
        f"basis {water_basis(f.wue, f.ewif)})",
        f"  ESS         {_ess_text(metrics, label, impact)}  "
        f"({metrics[Metric.EFFECTIVE_PARAMS_M]:.4g} M effective parameters; ESS rewards size: compare it "
        "only between models of one task and data set)",
        f"  throughput  {rate(result.throughput.mean, 'inferences')}  (batch {_batch_text(result)})",
        *_latency_and_memory(result, metrics),
        f"  quality     {quality}",
    ]
    if profile.tier_assumed:
        lines.append(
            f"  tier        {profile.tier}, an ASSUMPTION: {profile.source} (hardware.tier or "
            "hardware.profile sets it)"
        )
    if cpu is not None:
        lines.append(
            f"  cpu         {cpu.identity.microarch or 'unknown microarchitecture'} "
            f"(identified by {cpu.identity.how}: {cpu.identity.note})"
        )
    estimated = {c: m for c, m in result.methods.items() if not result.measured[c]}
    if estimated:
        lines.append(
            "  estimates   "
            + "; ".join(f"{c}: {m}" for c, m in estimated.items())
            + ". Estimated energy follows the job's CPU time and memory, not what the hardware drew."
        )
    if result.idle_measured:
        lines.append(f"  idle        {eng(result.idle_power.total, 'W')} baseline; {_baseline_text(result)}")
    if result.shared:
        whole = result.machine_energy.as_dict()
        drew = ", ".join(f"{c} {eng(whole[c], 'J')}" for c in result.shared)
        lines.append(
            f"  attribution {' and '.join(result.shared)} from RAPL, which counts every process: charged the "
            f"job's {result.job_cpu_share:.0%} of the machine's busy CPU time; the whole machine drew {drew} "
            "over the trials (energy_machine_j.*); the idle baseline is the machine's, charged at that share"
        )
        baseline = result.baseline
        if baseline is not None and baseline.other_cpu_load > BUSY_WARNING:
            lines.append(
                f"  WARNING     other processes used {baseline.other_cpu_load:.0%} of the CPUs during the "
                "idle baseline: their draw is in it, so net figures charged at the job's share are too low."
            )
    if result.other_cpu_load > BUSY_WARNING:
        lines.append(
            f"  WARNING     other processes used {result.other_cpu_load:.0%} of this machine's CPUs during "
            "the windows: on a shared machine, runs of this job differ by more than its trials' CI shows."
        )
    ci95 = metrics.get(names.energy_per_1k_ci95(f.attribution.value), math.nan)
    if unresolved(energy.point, ci95):
        lines.append(
            f"  UNRESOLVED  the energy's 95% CI over the trials, ±{eng(ci95, 'J', 2)}, is more than half of "
            f"it: {UNRESOLVED_ADVICE}."
        )
    if impact.per_1k_tokens is not None:
        basis = "generated" if result.tokens == result.tokens_out else "prompt"
        counts = f"({result.tokens_in} in, {result.tokens_out} out over the run)"
        tokens = metric_band(metrics, names.energy_per_1k_tokens(f.attribution.value))
        lines.insert(3, f"  tokens      {_quoted(tokens, 'J', f'per 1,000 {basis} tokens', label)} {counts}")
    return "\n".join(lines)


# How the compact answer marks the figures: the run list's Description column has ~50 characters.
_SHORT_LABEL = {ESTIMATE: "est."}


def compact_answer(
    metrics: Mapping[str, float], label: str, attribution: Attribution = Attribution.gross
) -> str:
    """`12.7 mJ/1k est. · 2.6 µg CO2e/1k · ESS 250`: energy and CO2e per 1,000 inferences and ESS, the
    first thing the run list shows of a run (its description's start, in plain text), led by
    UNRESOLVED where the energy's 95% CI (in `attribution`) is over half of it."""
    kind, _, rest = label.partition(",")
    short = _SHORT_LABEL.get(kind, kind) + (" WHOLE GPU" if rest else "")
    energy = metrics[ENERGY_IT_PER_1K]
    parts = [f"{eng(energy, 'J', 3)}/1k {short}"]
    if math.isfinite(co2e := metrics.get(CO2E_PER_1K, math.nan)):
        parts.append(f"{eng(co2e, 'g', 3)} CO2e/1k")
    if math.isfinite(ess := metrics.get(Metric.ESS, math.nan)):
        parts.append(f"ESS {ess:,.0f}" if ess >= 1000 else f"ESS {ess:.3g}")
    ci95 = metrics.get(names.energy_per_1k_ci95(attribution.value), math.nan)
    return ("UNRESOLVED " if unresolved(energy, ci95) else "") + " · ".join(parts)


def description(summary_text: str, answer: str) -> str:
    """The Markdown note of the MLflow run page: the compact answer in plain text (what the run list's
    Description column shows), the hardware, then the summary as a two-column table."""
    title, *rows = summary_text.splitlines()
    _, _, hardware = (part.strip() for part in title.split("  ", 2))
    table = ["| | |", "|---|---|"]
    for row in rows:
        key, _, value = row.strip().partition(" ")
        value = value.strip().replace("|", "\\|")
        table.append(f"| **{key}** | {value} |")
    # No heading after the answer: the run list shows the note's first 50 characters, the run page
    # its name as the title already.
    return "\n".join([answer, "", f"{hardware}", "", *table, ""])
