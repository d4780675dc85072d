"""Stage results as flat MLflow metrics and tags, and the short summary a job prints."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ecopipe.config import Attribution
from ecopipe.hardware import SIMULATED, DeviceProfile
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.stages.ess import SustainabilityResult
from ecopipe.stages.impact import EnergyBasis, Footprint, ImpactResult
from ecopipe.stages.inference import InferenceResult
from ecopipe.units import eng


def energy_basis(metrics: Mapping[str, float], attribution: Attribution) -> EnergyBasis:
    """What impact needs, read from inference metrics: the same path for a job and a re-impact."""
    name = attribution.value
    return EnergyBasis(
        energy_per_1k_j=metrics[f"energy_per_1k_{name}_j"],
        energy_per_1k_ci95_j=metrics.get(f"energy_per_1k_{name}_ci95_j", math.nan),
        run_energy_j=metrics[f"energy_{name}_j.total"],
        run_duration_s=metrics["window_s"],
        samples=int(metrics["samples"]),
        tokens=int(metrics.get("tokens", 0)),
    )


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{key}": value for key, value in values.items()}


def inference_metrics(result: InferenceResult) -> dict[str, float]:
    metrics: dict[str, float] = {
        "samples": result.samples,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "tokens": result.tokens,
        "trials": len(result.trials),
        "window_s": result.duration_s,
        "throughput_per_s": result.throughput.mean,
        "throughput_ci95_per_s": result.throughput.ci95,
        "latency_p50_s": result.latency_s(50),
        "latency_p90_s": result.latency_s(90),
        "latency_p99_s": result.latency_s(99),
        "load_s": result.load.duration_s,
        "load_energy_j": result.load.energy.total,
        "parameters": result.facts.parameters,
        "effective_parameters": result.facts.effective_parameters,
        "idle_measured": float(result.idle_measured),
    }
    if result.fit is not None:
        metrics |= {"fit_s": result.fit.duration_s, "fit_energy_j": result.fit.energy.total}
    # Net and idle figures exist only where an idle baseline was taken: never net = gross by default.
    attributions = list(Attribution) if result.idle_measured else [Attribution.gross]
    for attribution in attributions:
        name = attribution.value
        per_1k = result.per_1k_samples(attribution)
        metrics |= {
            f"energy_per_1k_{name}_j": per_1k.mean,
            f"energy_per_1k_{name}_ci95_j": per_1k.ci95,
            f"energy_per_1k_{name}_cv": per_1k.cv,
        }
        metrics |= _prefixed(
            f"energy_per_1k_{name}_j", result.component_per_1k_samples(attribution).as_dict()
        )
        run = result.gross if attribution is Attribution.gross else result.net
        metrics |= _prefixed(f"energy_{name}_j", run.as_dict())
        if result.tokens:
            metrics |= _prefixed(f"energy_per_1k_tokens_{name}_j", (run * (1000 / result.tokens)).as_dict())
            metrics[f"energy_per_1k_tokens_{name}_j"] = run.total * 1000 / result.tokens
    if result.idle_measured:
        metrics |= _prefixed("energy_idle_j", result.idle.as_dict())
        metrics |= _prefixed("idle_power_w", result.idle_power.as_dict())
    if result.trace is not None:
        metrics |= {
            "monitor_overhead_frac": result.trace.overhead_frac,
            "trace_samples": len(result.trace.samples),
        }
    metrics |= _prefixed("quality", result.quality)
    return metrics


def _footprint(prefix: str, fp: Footprint) -> dict[str, float]:
    return {
        f"energy_it_j_{prefix}": fp.energy_it_j,
        f"energy_facility_j_{prefix}": fp.energy_facility_j,
        f"co2e_g_{prefix}": fp.co2e_g,
        f"water_onsite_l_{prefix}": fp.water_onsite_l,
        f"water_offsite_l_{prefix}": fp.water_offsite_l,
        f"water_l_{prefix}": fp.water_l,
    }


def impact_metrics(impact: ImpactResult) -> dict[str, float]:
    factors = impact.factors
    metrics = {
        "carbon_intensity_g_per_kwh": factors.carbon_intensity.value,
        "pue": factors.pue.value,
        "wue_l_per_kwh": factors.wue.value,
        "ewif_l_per_kwh": factors.ewif.value,
        "co2e_ci95_g_per_1k": impact.per_1k_co2e_ci95_g,
        **_footprint("per_1k", impact.per_1k),
        **_footprint("per_inference", impact.per_inference),
        **_footprint("run", impact.run),
        **_footprint("per_hour", impact.per_hour),
    }
    if impact.per_1k_tokens is not None:
        metrics |= _footprint("per_1k_tokens", impact.per_1k_tokens)
    if impact.embodied_co2e_g_per_1k is not None:
        metrics["embodied_co2e_g_per_1k"] = impact.embodied_co2e_g_per_1k
    return metrics


HEADLINE = "headline/"  # the MLflow UI groups metrics by the prefix before "/"


def headline_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The answer in units whose values read in the MLflow UI: per million inferences, energy in J,
    CO2e in mg, water in mL (the default job's 5e-6 g per 1,000 is 5 mg per million), ESS,
    throughput and headline quality, each to 4 significant digits. From logged metrics alone, so a
    re-impact recomputes them."""
    per_million = {
        "energy_J_per_1M_inferences": metrics["energy_it_j_per_1k"] * 1e3,
        "co2e_mg_per_1M_inferences": metrics["co2e_g_per_1k"] * 1e6,
        "water_mL_per_1M_inferences": metrics["water_l_per_1k"] * 1e6,
        "ess": metrics["ess"],
        "throughput_per_s": metrics.get("throughput_per_s", math.nan),
        **{
            k.removeprefix("quality."): v
            for k, v in metrics.items()
            if k.removeprefix("quality.") in HEADLINE_QUALITY
        },
    }
    return {HEADLINE + k: float(f"{v:.4g}") for k, v in per_million.items() if math.isfinite(v)}


def impact_tags(impact: ImpactResult) -> dict[str, str]:
    f = impact.factors
    # An ESS over zero or negative CO2e is not defined: say so rather than leave the metric missing.
    ess = "defined" if impact.per_1k.co2e_g > 0 else f"not defined: {f.attribution.value} CO2e <= 0"
    return {
        "ecopipe.ess": ess,
        "ecopipe.region": f.region,
        "ecopipe.region_name": f.region_name,
        "ecopipe.attribution": f.attribution.value,
        "ecopipe.carbon_basis": f.carbon_basis,
        "ecopipe.source.carbon_intensity": f.carbon_intensity.source,
        "ecopipe.source.pue": f.pue.source,
        "ecopipe.source.wue": f.wue.source,
        "ecopipe.source.ewif": f.ewif.source,
    }


def ess_metrics(ess: SustainabilityResult) -> dict[str, float]:
    return {
        "ess": ess.ess,
        "ess_run": ess.ess_run,
        "ecep_wh_per_mparam": ess.ecep_wh_per_mparam,
        "effective_params_m": ess.effective_params_m,
    }


# Per component (`<prefix><component>`): why the job's device has no sensor (a MIG GPU, a UUID NVML
# does not know), and the source set aside on request (monitor.rapl=false: rapl).
UNMETERED_TAG = "energy_unmetered."
SET_ASIDE_TAG = "energy_set_aside."


def meter_tags(meter: EnergyMeter | InferenceResult, device: str) -> dict[str, str]:
    """How each component's energy is obtained: logged when the meter opens, so that the figures of a
    run that fails mid-measurement still say where they came from."""
    tags = {f"energy_source.{c}": s for c, s in meter.sources.items()}
    gpu_missing = device.startswith("cuda") and meter.sources["gpu"] == "none"
    tags["energy_complete"] = str(not gpu_missing).lower()
    tags |= {f"energy_measured.{c}": str(m).lower() for c, m in meter.measured.items()}
    tags |= {f"energy_resolution_s.{c}": f"{r:g}" for c, r in meter.resolution_s.items()}
    tags |= {f"energy_method.{c}": m for c, m in meter.methods.items()}
    tags |= {f"{UNMETERED_TAG}{c}": why for c, why in meter.unmetered.items()}
    tags |= {f"{SET_ASIDE_TAG}{c}": source for c, source in meter.set_aside.items()}
    return tags


def source_tags(result: InferenceResult) -> dict[str, str]:
    tags = meter_tags(result, result.device)
    if result.idle_measured:
        tags["ecopipe.net_negative"] = str(result.net_negative).lower()
    return tags


def _qualifier(result: InferenceResult, component: str, source: str) -> str:
    """What a component's figure is when it is not a plain measurement: a simulation or an estimate."""
    if "fake" in source:
        return f" {SIMULATED}"
    if result.measured[component]:
        return ""
    aside = result.set_aside.get(component)
    return f" (ESTIMATE: {aside} set aside on request)" if aside else " (ESTIMATE)"


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


def _ess_text(ess: SustainabilityResult, impact: ImpactResult) -> str:
    if math.isfinite(ess.ess):
        return f"{ess.ess:.4g}"
    f = impact.factors
    return (
        f"not defined ({f.attribution.value} CO2e {impact.per_1k.co2e_g:.3g} g per 1,000 inferences: "
        "the windows drew no more than the idle baseline)"
    )


# The summary's quality line; every other quality figure is in MLflow.
HEADLINE_QUALITY = ("accuracy", "perplexity", "wer", "r2")


def summary(
    name: str,
    profile: DeviceProfile,
    result: InferenceResult,
    impact: ImpactResult,
    ess: SustainabilityResult,
    data_choice: str,
) -> str:
    """The job's answer in a few lines, every quantity in engineering notation (29.4 mJ, 6.03 µg)."""
    f = impact.factors
    per_1k = result.per_1k_samples(f.attribution)
    shown = {k: v for k, v in result.quality.items() if k in HEADLINE_QUALITY}
    quality = ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) or (
        "none (random weights)" if result.facts.weights == "random" else "none for this model and data set"
    )
    lines = [
        f"ecopipe  {name}  on {profile.name} ({result.device}, tier {profile.tier})",
        f"  data        {data_choice}",
        f"  energy      {eng(per_1k.mean, 'J')} per 1,000 inferences ±{eng(per_1k.ci95, 'J', 2)} (95% CI, "
        f"{len(result.trials)} trials, {f.attribution.value})  [{_energy_label(result)}]",
        f"  CO2e        {eng(impact.per_1k.co2e_g, 'g')} per 1,000 inferences  (region {f.region} "
        f"{f.region_name}: {f.carbon_intensity.value:.4g} g/kWh {f.carbon_basis}, PUE {f.pue.value:.3g})",
        f"  water       {eng(impact.per_1k.water_l, 'L')} per 1,000 inferences  "
        f"(on-site WUE {f.wue.value:.3g} L/kWh, EWIF {f.ewif.value:.3g} L/kWh)",
        f"  ESS         {_ess_text(ess, impact)}  ({ess.effective_params_m:.4g} M effective parameters)",
        f"  throughput  {eng(result.throughput.mean)} inferences/s  (batch {result.batch_size})",
        f"  quality     {quality}",
    ]
    estimated = {c: m for c, m in result.methods.items() if not result.measured[c]}
    if estimated:
        lines.append(
            "  estimates   "
            + "; ".join(f"{c}: {m}" for c, m in estimated.items())
            + ". Estimated energy follows wall time, not what the hardware drew."
        )
    if impact.per_1k_tokens is not None:
        basis = "generated" if result.tokens == result.tokens_out else "prompt"
        counts = f"({result.tokens_in} in, {result.tokens_out} out over the run)"
        per_1k_tokens = impact.per_1k_tokens.energy_it_j
        lines.insert(3, f"  tokens      {eng(per_1k_tokens, 'J')} per 1,000 {basis} tokens {counts}")
    return "\n".join(lines)


def description(summary_text: str) -> str:
    """The summary as the Markdown note of the MLflow run page: a heading, then a two-column table."""
    title, *rows = summary_text.splitlines()
    _, name, hardware = (part.strip() for part in title.split("  ", 2))
    table = ["| | |", "|---|---|"]
    for row in rows:
        key, _, value = row.strip().partition(" ")
        value = value.strip().replace("|", "\\|")
        table.append(f"| **{key}** | {value} |")
    return "\n".join([f"### {name}", "", f"{hardware}", "", *table, ""])
