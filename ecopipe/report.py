"""Stage results as flat MLflow metrics and tags: the figures a job logs, their bands and headline, and
how each was obtained (summary.py writes the text a reader sees of them)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ecopipe import names
from ecopipe.config import Attribution
from ecopipe.monitor.energy import Bound, EnergyMeter
from ecopipe.monitor.stats import Band, spread
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
from ecopipe.results import InferenceResult
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.stages.ess import SustainabilityResult
from ecopipe.stages.impact import JOULES_PER_KWH, EnergyBasis, Footprint, ImpactResult


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
    if result.sources["gpu"] != "none":
        gpu = result.per_1k_bands(Attribution.gross)["gpu"].scaled(1000 / JOULES_PER_KWH)  # J -> Wh
        metrics |= band_metrics(Metric.GPU_WH_PER_1K, gpu)
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


# The quality figures shown: the summary's quality line, the headline metrics, aggregation's tables;
# every other quality figure is in MLflow.
HEADLINE_QUALITY = ("accuracy", "perplexity", "wer", "r2")


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
