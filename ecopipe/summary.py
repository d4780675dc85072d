"""The text a reader sees of a job: the summary it prints (summary.txt), the compact answer the run list
shows and the run page's description, every figure with its band and a word saying what it is."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ecopipe import names
from ecopipe.config import Attribution
from ecopipe.hardware import SIMULATED, DeviceProfile
from ecopipe.monitor.busy import BUSY_WARNING
from ecopipe.monitor.stats import UNRESOLVED_ADVICE, Band, unresolved
from ecopipe.names import CO2E_PER_1K, ENERGY_IT_PER_1K, WATER_PER_1K, Metric
from ecopipe.reference import water_basis
from ecopipe.report import HEADLINE_QUALITY, metric_band
from ecopipe.results import ESTIMATE, MEASURED, InferenceResult, TrialsStop
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.stages.impact import ImpactResult
from ecopipe.units import eng, eng_range, rate


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
