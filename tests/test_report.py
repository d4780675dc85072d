"""report.py by hand: the flat metrics, tags, headline and summary of a stage result with round numbers.

The result is built from the stage's own typed dataclasses (no sensor, no job), so these checks run in
milliseconds: the mutation run (`make mutate`) leans on them for report.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
from scipy import stats

from ecopipe import report
from ecopipe.config import Attribution, ImpactConfig, Phase
from ecopipe.hardware import DeviceProfile
from ecopipe.job import footprint_stages
from ecopipe.monitor.energy import Energy, Power, Window, machine_meter
from ecopipe.monitor.sampler import Trace
from ecopipe.names import Tag, TagFamily
from ecopipe.results import IdleBaseline, InferenceResult, ModelFacts, TrialResult
from ecopipe.stages.ess import run_ess
from ecopipe.stages.impact import resolve_factors, run_impact

T_975_1 = float(stats.t.ppf(0.975, 1))  # two trials: one degree of freedom


def trial(gpu: float, cpu: float, ram: float, seconds: float) -> TrialResult:
    return TrialResult(Window(Energy(gpu, cpu, ram), seconds, 100.0, 100.0 + seconds), 2, 100, 1000, 400)


def result(**changes) -> InferenceResult:
    """Two trials of 100 inferences: 10.5 J in 0.1 s, then 15.5 J in 0.15 s; idle 26 W."""
    made = InferenceResult(
        device="cuda:0",
        sources={"gpu": "nvml_counter", "cpu": "estimated_specpower", "ram": "estimated_rss"},
        measured={"gpu": True, "cpu": False, "ram": False},
        methods={"cpu": "8 W share", "ram": "0.375 W/GB"},
        resolution_s={"gpu": 0.1, "cpu": 0.01, "ram": 0.0},
        facts=ModelFacts(1_000_000, 500_000.0, "float16", "pretrained", phase=Phase.generate),
        load=Window(Energy(0.0, 1.0, 0.25), 0.5),
        fit=Window(Energy(0.0, 4.0, 0.0), 2.0),
        baseline=IdleBaseline(Window(Power(20.0, 5.0, 1.0) * 2.0, 2.0), None),  # 26 W
        trials=(trial(8.0, 2.0, 0.5, 0.1), trial(12.0, 3.0, 0.5, 0.15)),
        quality={"accuracy": 0.91234, "loss": 0.3},
        batch_latencies_s=(0.01, 0.02, 0.03, 0.04),
        batch_size=8,
        trace=None,
    )
    return replace(made, **changes)


def two(a: float, b: float) -> dict[str, float]:
    """Mean, 95% half-width and CV of two values, by hand."""
    mean, spread = (a + b) / 2, abs(a - b) / math.sqrt(2)
    return {"": mean, "ci95": T_975_1 * spread / math.sqrt(2), "cv": spread / mean}


def components(prefix: str, gpu: float, cpu: float, ram: float) -> dict[str, float]:
    return {
        f"{prefix}.gpu": gpu,
        f"{prefix}.cpu": cpu,
        f"{prefix}.ram": ram,
        f"{prefix}.total": gpu + cpu + ram,
    }


def band(name: str, a: float, b: float) -> dict[str, float]:
    """A per-trial figure of measured windows: its band is its mean less and plus its 95% CI; a gross
    energy's band stops at zero (two trials make a wide CI)."""
    mean, ci = two(a, b)[""], two(a, b)["ci95"]
    low = max(0.0, mean - ci) if "gross" in name else mean - ci
    return {name: mean, f"{name}_low": low, f"{name}_high": mean + ci}


def exact(values: dict[str, float]) -> dict[str, float]:
    """Run totals of measured windows: no CI, their band is the figure itself."""
    return {f"{k}{end}": v for k, v in values.items() for end in ("", "_low", "_high")}


def test_inference_metrics_by_hand():
    gross, net = two(105.0, 155.0), two(79.0, 116.0)  # J per 1,000: 10.5 and 15.5 J less 26 W x window
    throughput = two(1000.0, 100 / 0.15)
    expected = {
        "samples": 200,
        "tokens_in": 2000,
        "tokens_out": 800,
        "tokens": 800,  # a generating model: its generated tokens
        "trials": 2,
        "window_s": 0.25,
        "batch_size_used": 8,
        "throughput_per_s": throughput[""],
        "throughput_ci95_per_s": throughput["ci95"],
        "latency_p50_s": 0.025,
        "latency_p90_s": 0.037,
        "latency_p99_s": 0.0397,
        "load_s": 0.5,
        "load_energy_j": 1.25,
        "fit_s": 2.0,
        "fit_energy_j": 4.0,
        "parameters": 1_000_000,
        "effective_parameters": 500_000.0,
        "idle_measured": 1.0,
        **{f"energy_per_1k_gross{k and '_' + k}_j".replace("_cv_j", "_cv"): v for k, v in gross.items()},
        **{f"energy_per_1k_net{k and '_' + k}_j".replace("_cv_j", "_cv"): v for k, v in net.items()},
        # per trial, J per 1,000: gross gpu 80 and 120, cpu 20 and 30, ram 5 and 5; the idle's 20, 5
        # and 1 W over 0.1 and 0.15 s, per 1,000: 20 and 30, 5 and 7.5, 1 and 1.5
        **band("energy_per_1k_gross_j", 105.0, 155.0),
        **band("energy_per_1k_gross_j.gpu", 80.0, 120.0),
        **band("energy_per_1k_gross_j.cpu", 20.0, 30.0),
        **band("energy_per_1k_gross_j.ram", 5.0, 5.0),
        **band("energy_per_1k_gross_j.total", 105.0, 155.0),
        **band("energy_per_1k_net_j", 79.0, 116.0),
        **band("energy_per_1k_net_j.gpu", 60.0, 90.0),
        **band("energy_per_1k_net_j.cpu", 15.0, 22.5),
        **band("energy_per_1k_net_j.ram", 4.0, 3.5),
        **band("energy_per_1k_net_j.total", 79.0, 116.0),
        **exact(components("energy_gross_j", 20.0, 5.0, 1.0)),
        **exact(components("energy_net_j", 15.0, 3.75, 0.75)),
        **exact(components("energy_per_1k_tokens_gross_j", 25.0, 6.25, 1.25)),
        **exact({"energy_per_1k_tokens_gross_j": 32.5}),
        **exact(components("energy_per_1k_tokens_net_j", 18.75, 4.6875, 0.9375)),
        **exact({"energy_per_1k_tokens_net_j": 24.375}),
        **components("energy_idle_j", 5.0, 1.25, 0.25),
        **exact(components("idle_power_w", 20.0, 5.0, 1.0)),
        "quality.accuracy": 0.91234,
        "quality.loss": 0.3,
    }
    assert report.inference_metrics(result()) == pytest.approx(expected, rel=1e-12)
    # No baseline: gross only, no net or idle figure; no fit; a prefill window counts prompt tokens.
    bare = report.inference_metrics(
        result(
            baseline=None,
            fit=None,
            facts=ModelFacts(1, 1.0, "f", "w", phase=Phase.prefill),
        )
    )
    assert not [k for k in bare if "net" in k or k.startswith(("energy_idle", "idle_power", "fit_"))]
    assert bare["idle_measured"] == 0.0 and bare["tokens"] == 2000
    assert bare["energy_per_1k_tokens_gross_j"] == pytest.approx(26.0 * 1000 / 2000, rel=1e-12)
    # A sampler trace adds its size and the sampler's share of one core: 0.05 CPU s over a 0.25-s window.
    trace = Trace(pd.DataFrame({"t_s": [0.0, 0.1, 0.2]}), wall_s=0.25, sampler_cpu_s=0.05)
    traced = report.inference_metrics(result(trace=trace))
    assert {k: traced[k] for k in set(traced) - set(expected)} == {
        "monitor_overhead_frac": pytest.approx(0.2, rel=1e-12),
        "trace_samples": 3,
    }


def footprint(scope: str, joules: float) -> dict[str, float]:
    """At 400 g/kWh, PUE 1.5, on-site WUE 2 L/kWh, EWIF 3 L/kWh."""
    kwh = joules / 3.6e6
    return {
        f"energy_it_j_{scope}": joules,
        f"energy_facility_j_{scope}": joules * 1.5,
        f"co2e_g_{scope}": kwh * 1.5 * 400,
        f"water_onsite_l_{scope}": kwh * 2.0,
        f"water_offsite_l_{scope}": kwh * 1.5 * 3.0,
        f"water_l_{scope}": kwh * 2.0 + kwh * 1.5 * 3.0,
    }


FACTORS = ImpactConfig(carbon_intensity=400.0, pue=1.5, wue=2.0, ewif=3.0, attribution=Attribution.net)


def test_impact_ess_headline_and_tags_by_hand():
    metrics = report.inference_metrics(result())
    basis = report.energy_basis(metrics, Attribution.net)
    net = two(79.0, 116.0)
    assert (basis.energy_per_1k_j, basis.energy_per_1k_ci95_j) == pytest.approx((net[""], net["ci95"]))
    assert (basis.run_energy_j, basis.run_duration_s, basis.samples, basis.tokens) == pytest.approx(
        (19.5, 0.25, 200, 800)
    )
    gross = report.energy_basis(metrics, Attribution.gross)
    assert (gross.energy_per_1k_j, gross.run_energy_j) == pytest.approx((130.0, 26.0))
    # Without a CI (one trial) or tokens the basis says so: NaN and 0.
    lean = report.energy_basis(
        {k: v for k, v in metrics.items() if "ci95" not in k and k != "tokens"}, Attribution.net
    )
    assert math.isnan(lean.energy_per_1k_ci95_j) and lean.tokens == 0

    factors = resolve_factors(FACTORS, "WORLD", "datacenter")
    impact = run_impact(basis, factors, embodied_kgco2e=1000.0, lifetime_years=4.0)
    embodied = 1000.0 * 1000 * (0.25 / 200 * 1000) / (4.0 * 365.25 * 24 * 3600)
    per_1k = footprint("per_1k", net[""])
    expected = {
        "carbon_intensity_g_per_kwh": 400.0,
        "pue": 1.5,
        "wue_l_per_kwh": 2.0,
        "ewif_l_per_kwh": 3.0,
        "co2e_ci95_g_per_1k": net["ci95"] / 3.6e6 * 1.5 * 400,
        **per_1k,
        **footprint("per_inference", net[""] / 1000),
        **footprint("run", 19.5),
        **footprint("per_hour", 19.5 * 3600 / 0.25),
        **footprint("per_1k_tokens", 19.5 * 1000 / 800),
        "embodied_co2e_g_per_1k": embodied,
    }
    impact_metrics = report.impact_metrics(impact)
    assert impact_metrics == pytest.approx(expected, rel=1e-12)

    ess = run_ess(500_000.0, impact)
    ess_metrics = report.ess_metrics(ess)
    assert ess_metrics == pytest.approx(
        {
            "ess": 0.5 / per_1k["co2e_g_per_1k"],
            "ess_run": 0.5 / (19.5 / 3.6e6 * 1.5 * 400),
            "ecep_wh_per_mparam": net[""] / 3600 / 0.5,
            "effective_params_m": 0.5,
        },
        rel=1e-12,
    )
    everything = {**metrics, **impact_metrics, **ess_metrics}
    assert report.headline_metrics(everything) == {
        "headline/energy_J_per_1k": float(f"{net['']:.4g}"),
        "headline/co2e_mg_per_1k": float(f"{per_1k['co2e_g_per_1k'] * 1e3:.4g}"),
        "headline/water_mL_per_1k": float(f"{per_1k['water_l_per_1k'] * 1e3:.4g}"),
        "headline/ess_Mparams_per_gCO2e": float(f"{ess_metrics['ess']:.4g}"),
        "headline/throughput_per_s": float(f"{metrics['throughput_per_s']:.4g}"),
        "headline/accuracy": 0.9123,
    }
    # At a rounding edge (x.4999 in the unit shown) only the exact scale gives the 4 digits shown.
    edge = 1.2344999
    assert report.headline_metrics(
        {"energy_it_j_per_1k": edge * 1e3, "co2e_g_per_1k": edge, "water_l_per_1k": edge, "ess": 1.0}
    ) == {
        "headline/energy_J_per_1k": 1234.0,
        "headline/co2e_mg_per_1k": 1234.0,
        "headline/water_mL_per_1k": 1234.0,
        "headline/ess_Mparams_per_gCO2e": 1.0,
    }
    # A figure that is not finite (an ESS not defined, no throughput) is left out, not logged as NaN.
    undefined = report.headline_metrics({**everything, "ess": math.nan, "throughput_per_s": math.inf})
    assert set(undefined) == {
        "headline/energy_J_per_1k",
        "headline/co2e_mg_per_1k",
        "headline/water_mL_per_1k",
        "headline/accuracy",
    }
    assert report.impact_tags(impact) == {
        Tag.ESS_STATUS: "defined",
        Tag.REGION: "WORLD",
        Tag.REGION_NAME: factors.region_name,
        Tag.ATTRIBUTION: "net",
        Tag.CARBON_BASIS: "override",
        Tag.CARBON_YEAR: "not stated",
        Tag.WATER_BASIS: "unknown",
        TagFamily.FACTOR_SOURCE.of("carbon_intensity"): "override",
        TagFamily.FACTOR_SOURCE.of("pue"): "override",
        TagFamily.FACTOR_SOURCE.of("wue"): "override",
        TagFamily.FACTOR_SOURCE.of("ewif"): "override",
    }
    # CO2e of zero (a zero-carbon grid): ESS not defined, and the tag says why.
    clean = run_impact(basis, resolve_factors(replace(FACTORS, carbon_intensity=0.0), "WORLD", "datacenter"))
    assert report.impact_tags(clean)[Tag.ESS_STATUS] == "not defined: net CO2e <= 0"
    assert "embodied_co2e_g_per_1k" not in report.impact_metrics(clean)
    assert "co2e_g_per_1k_tokens" not in report.impact_metrics(run_impact(replace(basis, tokens=0), factors))


def test_source_tags_say_what_measured_each_component():
    assert report.source_tags(result()) == {
        TagFamily.ENERGY_SOURCE.of("gpu"): "nvml_counter",
        TagFamily.ENERGY_SOURCE.of("cpu"): "estimated_specpower",
        TagFamily.ENERGY_SOURCE.of("ram"): "estimated_rss",
        Tag.ENERGY_COMPLETE: "true",
        TagFamily.ENERGY_MEASURED.of("gpu"): "true",
        TagFamily.ENERGY_MEASURED.of("cpu"): "false",
        TagFamily.ENERGY_MEASURED.of("ram"): "false",
        TagFamily.ENERGY_RESOLUTION.of("gpu"): "0.1",
        TagFamily.ENERGY_RESOLUTION.of("cpu"): "0.01",
        TagFamily.ENERGY_RESOLUTION.of("ram"): "0",
        TagFamily.ENERGY_METHOD.of("cpu"): "8 W share",
        TagFamily.ENERGY_METHOD.of("ram"): "0.375 W/GB",
        Tag.NET_NEGATIVE: "false",
    }
    # A CUDA job whose GPU has no sensor is incomplete; a CPU job without one is complete.
    blind = {"gpu": "none", "cpu": "rapl", "ram": "estimated_rss"}
    assert report.source_tags(result(sources=blind))[Tag.ENERGY_COMPLETE] == "false"
    assert report.source_tags(result(sources=blind, device="cpu"))[Tag.ENERGY_COMPLETE] == "true"
    # Windows that drew less than idle are flagged; without a baseline there is no flag at all.
    low = result(baseline=IdleBaseline(Window(Power(200.0, 0.0, 0.0), 1.0), None))
    assert report.source_tags(low)[Tag.NET_NEGATIVE] == "true"
    assert Tag.NET_NEGATIVE not in report.source_tags(result(baseline=None))


PROFILE = DeviceProfile("h100", "NVIDIA H100 SXM 80GB", "NVIDIA H100", "datacenter", 700.0, None, "table")


def summarise(inference: InferenceResult, config: ImpactConfig = FACTORS, params: float = 500_000.0) -> str:
    """The job's summary, from its logged metrics and the impact stage at each bound, as a job makes it."""
    metrics = report.inference_metrics(inference)
    factors = resolve_factors(config, "WORLD", "datacenter")
    impact, _, stage = footprint_stages(metrics, factors, params, None, None)
    return report.summary("m-d-fp16-bs8", PROFILE, inference, impact, metrics | stage, "d (as configured)")


def test_summary_and_run_description_by_hand():
    text = summarise(result())
    net = two(79.0, 116.0)
    low, high = net[""] - net["ci95"], net[""] + net["ci95"]  # the gpu is measured, the cpu estimated
    co2e, water = (net[""] / 3.6e6 * f for f in (1.5 * 400, 2.0 + 1.5 * 3.0))
    assert (net[""], round(low, 1), round(high, 1)) == (pytest.approx(97.5), -137.6, 332.6)
    assert (round(co2e * 1e3, 2), round(low * 600 / 3.6e3, 1), round(high * 600 / 3.6e3, 1)) == (
        16.25,
        -22.9,
        55.4,
    )  # mg
    assert (round(water * 1e6, 1), round(low * 6.5 / 3.6, 1), round(high * 6.5 / 3.6, 1)) == (
        176.0,
        -248.4,
        600.5,
    )  # µL
    assert text.splitlines() == [
        "ecopipe  m-d-fp16-bs8  on NVIDIA H100 SXM 80GB (cuda:0, tier datacenter)",
        "  data        d (as configured)",
        "  energy      97.5 J (-140–330 J) per 1,000 inferences, ESTIMATE (band: the coefficients' range "
        "and the 95% CI; 2 trials, net)  "
        "[gpu nvml_counter, cpu estimated_specpower (ESTIMATE), ram estimated_rss (ESTIMATE)]",
        "  tokens      24.4 J per 1,000 generated tokens, ESTIMATE (2000 in, 800 out over the run)",
        "  CO2e        16.3 mg (-23–55 mg) per 1,000 inferences, ESTIMATE  (region WORLD "
        f"{resolve_factors(FACTORS, 'WORLD', 'datacenter').region_name}: 400 g/kWh override, year not "
        "stated; PUE 1.5)",
        "  water       176 µL (-250–600 µL) per 1,000 inferences, ESTIMATE  (on-site WUE 2 L/kWh, "
        "EWIF 3 L/kWh; basis unknown)",
        # the low end's CO2e is below zero: the ESS has a lowest value (from the highest CO2e) and no
        # upper bound
        f"  ESS         {0.5 / co2e:.4g} (at least {0.5 / (high * 600 / 3.6e6):.3g}: no upper bound, CO2e's "
        "band reaches 0), ESTIMATE  (0.5 M effective parameters; ESS rewards size: compare it only "
        "between models of one task and data set)",
        "  throughput  833 inferences/s  (batch 8)",
        "  latency     per batch of 8: p50 25 ms, p99 39.7 ms",  # of 10, 20, 30, 40 ms, interpolated
        "  quality     accuracy 0.9123",
        "  estimates   cpu: 8 W share; ram: 0.375 W/GB. Estimated energy follows the job's CPU time and "
        "memory, not what the hardware drew.",
        "  idle        26 W baseline; no wait for power to settle",  # a result made without a settle
        # two trials, 79 and 116 J: the CI's half-width, 240 J, is more than the figure
        "  UNRESOLVED  the energy's 95% CI over the trials, ±240 J, is more than half of it: more trials "
        "(monitor.trials), longer windows (monitor.min_window_s) or monitor.target_rel_ci=0.05 narrow it.",
    ]
    # An unlisted device's tier is an assumption, and the summary says so (a listed one's is the table's).
    unlisted = replace(PROFILE, key="unknown", tier_assumed=True, source="not in the hardware table; tier x")
    metrics = report.inference_metrics(result())
    impact, _, stage = footprint_stages(
        metrics, resolve_factors(FACTORS, "WORLD", "datacenter"), 1.0, None, None
    )
    (tier_line,) = [
        line
        for line in report.summary("m", unlisted, result(), impact, metrics | stage, "d").splitlines()
        if line.startswith("  tier ")
    ]
    assert tier_line.startswith("  tier        datacenter, an ASSUMPTION: not in the hardware table; tier x")
    # The run page's note: the compact answer, the hardware, then one table row per line.
    assert report.description(text, "the answer").splitlines()[:7] == [
        "the answer",
        "",
        "on NVIDIA H100 SXM 80GB (cuda:0, tier datacenter)",
        "",
        "| | |",
        "|---|---|",
        "| **data** | d (as configured) |",
    ]
    assert "| **quality** | accuracy 0.9123 |" in report.description(text, "")
    assert report.description("t  n  h\n  k  a|b", "").splitlines()[-1] == "| **k** | a\\|b |"
    assert report.description("t  n  h\n  k  v", "").endswith("| **k** | v |\n")


def test_the_compact_answer_fits_the_run_lists_description_column():
    """The run list shows a note's first 50 characters: energy and CO2e per 1,000 and ESS, and what
    they are, in fewer."""
    figures = {"energy_it_j_per_1k": 0.012744, "co2e_g_per_1k": 2.6215e-6, "ess": 247.6}
    answer = report.compact_answer(figures, "ESTIMATE")
    assert answer == "12.7 mJ/1k est. · 2.62 µg CO2e/1k · ESS 248" and len(answer) <= 50
    large = {"energy_it_j_per_1k": 20283.0, "co2e_g_per_1k": 2.2537, "ess": 0.1234}
    assert report.compact_answer(large, "measured, WHOLE GPU") == (
        "20.3 kJ/1k measured WHOLE GPU · 2.25 g CO2e/1k · ESS 0.123"
    )
    assert report.compact_answer({"energy_it_j_per_1k": 1.0}, "SIMULATED") == "1 J/1k SIMULATED"
    # An ESS of thousands in plain digits; an energy whose CI is over half of it leads with UNRESOLVED
    wide = {**figures, "ess": 1612.4, "energy_per_1k_net_ci95_j": 0.007, "energy_per_1k_gross_ci95_j": 0.001}
    assert report.compact_answer(wide, "ESTIMATE") == "12.7 mJ/1k est. · 2.62 µg CO2e/1k · ESS 1,612"
    assert report.compact_answer(wide, "ESTIMATE", Attribution.net).startswith("UNRESOLVED 12.7 mJ/1k est.")


def test_summary_names_what_was_not_measured_and_an_ess_that_is_not_defined():
    simulated = result(
        sources={"gpu": "fake", "cpu": "rapl", "ram": "none"},
        measured={"gpu": False, "cpu": True, "ram": False},
        methods={},
        quality={"loss": 0.3},
        facts=ModelFacts(1, 1.0, "f", "random", {}),
    )
    zero = replace(FACTORS, carbon_intensity=0.0, attribution=Attribution.gross)
    lines = summarise(simulated, zero, 1.0).splitlines()
    assert "[gpu fake (SIMULATED), cpu rapl]" in lines[2] and ", SIMULATED (" in lines[2]
    assert lines[6] == (
        "  ESS         not defined (gross CO2e 0 g per 1,000 inferences: the windows drew no more than "
        "the idle baseline)  (1e-06 M effective parameters; ESS rewards size: compare it only between "
        "models of one task and data set)"
    )
    assert lines[-3] == "  quality     none (random weights)" and not any(
        "estimates" in line for line in lines
    )
    # Gross attribution: the summary's figure is the gross mean, (105 + 155) / 2 J per 1,000.
    assert lines[2].startswith("  energy      130 J (") and "2 trials, gross)" in lines[2]
    assert lines[3].startswith("  tokens      32.5 J per 1,000 generated tokens")  # 260 J / 800 out
    # A prefill pass generates nothing: its tokens are the prompt's.
    prefill = result(trials=tuple(replace(t, tokens_out=0) for t in simulated.trials))
    assert "  tokens      13 J per 1,000 prompt tokens, ESTIMATE (2000 in, 0 out over the run)" in summarise(
        prefill, zero, 1.0
    )
    blind = result(
        sources={"gpu": "none", "cpu": "rapl", "ram": "none"},
        measured={"gpu": False, "cpu": True, "ram": False},
        quality={},
    )
    line = summarise(blind, zero, 1.0).splitlines()[2]
    assert "[gpu NOT MEASURED (no usable sensor: the total leaves the GPU out), cpu rapl]" in line
    # Every component with a sensor measured: the figures are "measured", their band the 95% CI.
    assert ", measured (95% CI; 2 trials, gross)" in line and "ESTIMATE" not in line
    cpu_job = summarise(replace(blind, device="cpu"), zero, 1.0)
    assert "[cpu rapl]" in cpu_job and "none for this model and data set" in cpu_job


UNMETERED_REASON = "cuda:0: NVML knows no GPU or MIG instance with UUID cccc"
WHOLE_GPU_REASON = (
    "cuda:0 is MIG instance MIG-dddd of NVML GPU 0, holding 43% of it: NVML's counter covers ..."
)


def energy_line(inference: InferenceResult) -> str:
    """The summary's energy line, where each component's source is named."""
    return summarise(inference).splitlines()[2]


def test_a_gpu_left_unmetered_says_why_in_tags_and_summary():
    """The job's GPU is left out on purpose (a UUID NVML does not know): the run is incomplete, and says why.

    The meter is the job's real one on this machine (its CPU and RAM sensors, whatever they are).
    """
    meter = machine_meter([], unmetered_gpu=UNMETERED_REASON)
    tags = report.meter_tags(meter, "cuda:0")
    assert (tags[TagFamily.ENERGY_SOURCE.of("gpu")], tags[Tag.ENERGY_COMPLETE]) == ("none", "false")
    assert tags[TagFamily.ENERGY_UNMETERED.of("gpu")] == UNMETERED_REASON
    assert not any(key.startswith("energy_set_aside.") for key in tags)
    assert TagFamily.ENERGY_UNMETERED.of("gpu") not in report.meter_tags(machine_meter([]), "cuda:0")
    blind = result(sources=meter.sources, measured=meter.measured, unmetered=meter.unmetered)
    assert report.source_tags(blind)[TagFamily.ENERGY_UNMETERED.of("gpu")] == UNMETERED_REASON
    assert f"[gpu NOT MEASURED ({UNMETERED_REASON}: the total leaves the GPU out), cpu " in energy_line(blind)


def test_a_whole_gpu_counter_is_never_called_the_jobs_own():
    """Under MIG the counter is the whole GPU's: measured, but labelled WHOLE GPU wherever it is shown."""
    whole = result(
        sources={"gpu": "nvml_counter_whole_gpu", "cpu": "rapl", "ram": "rapl"},
        measured={"gpu": True, "cpu": True, "ram": True},
        whole_gpu={"gpu": WHOLE_GPU_REASON},
    )
    assert whole.figures_label == "measured, WHOLE GPU"
    assert report.result_tags(whole)[Tag.FIGURES] == "measured, WHOLE GPU"
    assert report.source_tags(whole)[TagFamily.ENERGY_WHOLE_GPU.of("gpu")] == WHOLE_GPU_REASON
    line = energy_line(whole)
    assert (
        f"[gpu nvml_counter_whole_gpu (the WHOLE GPU, not the job's own: {WHOLE_GPU_REASON}), cpu rapl"
        in line
    )
    assert ", measured, WHOLE GPU (" in line and ", measured (" not in line
    assert all("measured, WHOLE GPU" in row for row in summarise(whole).splitlines()[3:6])  # CO2e, water, ESS
    # MIG on a machine without RAPL: an estimate, and still the whole GPU's.
    estimated = replace(
        whole,
        sources={"gpu": "nvml_counter_whole_gpu", "cpu": "estimated_specpower", "ram": "estimated_rss"},
        measured={"gpu": True, "cpu": False, "ram": False},
    )
    assert estimated.figures_label == "ESTIMATE, WHOLE GPU"
    assert all("ESTIMATE, WHOLE GPU" in row for row in summarise(estimated).splitlines()[2:7])


def test_rapl_set_aside_on_request_is_named_in_tags_and_summary():
    aside = result(set_aside={"cpu": "rapl", "ram": "rapl"})
    tags = report.source_tags(aside)
    assert (tags[TagFamily.ENERGY_SET_ASIDE.of("cpu")], tags[TagFamily.ENERGY_SET_ASIDE.of("ram")]) == (
        "rapl",
        "rapl",
    )
    assert (
        "[gpu nvml_counter, cpu estimated_specpower (ESTIMATE: rapl set aside on request), "
        "ram estimated_rss (ESTIMATE: rapl set aside on request)]" in energy_line(aside)
    )


def test_the_summary_says_what_ended_the_trials():
    from ecopipe.results import TrialsStop

    metrics = report.inference_metrics(result())
    impact, _, stage = footprint_stages(
        metrics, resolve_factors(FACTORS, "WORLD", "datacenter"), 1.0, None, None
    )

    def energy(stop: TrialsStop, target: float | None) -> str:
        text = report.summary("m", PROFILE, result(trials_stop=stop), impact, metrics | stage, "d", target)
        return text.splitlines()[2]

    assert "; 2 trials, stopped once the CI was within 2.5% of the mean, net)" in energy(
        TrialsStop.TARGET, 0.025
    )
    assert "; 2 trials: the CI target 5% was NOT reached (monitor.max_trials), net)" in energy(
        TrialsStop.MAX_TRIALS, 0.05
    )
    assert "; 2 trials, net)" in energy(TrialsStop.FIXED, None)


def test_the_summary_says_how_long_power_took_to_settle_or_that_it_did_not():
    from ecopipe.monitor.settle import Settling

    def taken(settling: Settling, **changes) -> InferenceResult:
        return result(baseline=IdleBaseline(result().idle_window, settling, **changes))

    settled = taken(Settling((30.0, 26.2, 26.0, 26.1), 0.8, 0.2))
    assert (
        "  idle        26 W baseline; power settled in 0.8 s (3 windows of 0.2 s, their spread within 5% "
        "of their mean)" in summarise(settled).splitlines()
    )
    metrics = report.inference_metrics(settled)
    assert (metrics["settle_s"], metrics["idle_settled"]) == (0.8, 1.0)
    unsettled = taken(Settling((40.0, 35.0, 30.0), 30.0, 0.2))
    line = next(row for row in summarise(unsettled).splitlines() if row.startswith("  idle"))
    assert (
        "power did NOT settle in 30.0 s" in line and "last: 40, 35, 30 W" in line and "may be biased" in line
    )
    assert report.inference_metrics(unsettled)["idle_settled"] == 0.0
    # An earlier job's baseline, served from the sweep's cache: its wait is not this job's.
    reused = taken(Settling((40.0, 35.0, 30.0), 30.0, 0.2), reused=True)
    assert "settle_s" not in report.inference_metrics(reused)
    line = next(row for row in summarise(reused).splitlines() if row.startswith("  idle"))
    assert line == (
        "  idle        26 W baseline; reused from an earlier job of this process (the same device, model "
        "and precision)"
    )


def test_a_busy_idle_baseline_is_said_to_make_shared_net_figures_too_low():
    shared = tuple(
        replace(t, window=replace(t.window, job_share=0.5, shared=("cpu",), machine=t.window.energy))
        for t in result().trials
    )
    for load, warned in ((0.4, True), (0.02, False)):
        busy = result(trials=shared, baseline=IdleBaseline(result().idle_window, None, other_cpu_load=load))
        text = summarise(busy)
        assert ("during the idle baseline: their draw is in it" in text) is warned
        assert "charged the job's 50% of the machine's busy CPU time" in text


def test_net_under_a_shared_counter_is_the_share_of_the_machine_less_its_idle_by_hand():
    """Trials at a 50% share of a RAPL package: the machine's idle baseline (5 W of cpu) is charged at
    the same share, so net cpu = share x (machine - idle x seconds), trial by trial; gpu and ram whole."""
    shared = tuple(
        replace(
            t,
            window=replace(
                t.window,
                energy=t.window.energy.with_share(0.5, ("cpu",)),
                job_share=0.5,
                shared=("cpu",),
                machine=t.window.energy,
            ),
        )
        for t in result().trials
    )
    split = result(trials=shared)
    # Trial 1: machine cpu 2 J over 0.1 s, trial 2: 3 J over 0.15 s; idle 20 W gpu, 5 W cpu, 1 W ram.
    nets = [split.trial_energy(t, Attribution.net) for t in split.trials]
    assert [n.cpu for n in nets] == pytest.approx([0.5 * (2.0 - 5.0 * 0.1), 0.5 * (3.0 - 5.0 * 0.15)])
    assert [n.gpu for n in nets] == pytest.approx([8.0 - 20.0 * 0.1, 12.0 - 20.0 * 0.15])
    assert split.idle.cpu == pytest.approx(0.5 * 5.0 * 0.25) and split.idle.ram == pytest.approx(0.25)
    metrics = report.inference_metrics(split)
    assert metrics["energy_idle_j.cpu"] == pytest.approx(0.625) and metrics["idle_power_w.cpu"] == 5.0
    assert metrics["job_cpu_share"] == 0.5 and metrics["energy_machine_j.cpu"] == pytest.approx(5.0)
    assert metrics["energy_net_j.cpu"] == pytest.approx(0.5 * (5.0 - 5.0 * 0.25))


def test_rates_read_per_second_minute_or_hour_and_unresolved_figures_say_so():
    # "621 m inferences/s" read as 621 million: a rate under one a second moves to a longer span.
    from ecopipe.aggregation.render import shown
    from ecopipe.units import rate

    assert rate(450_000, "inferences") == "450 k inferences/s"
    assert rate(0.621, "inferences") == "37.3 inferences/min"
    assert rate(0.0041, "inferences") == "14.8 inferences/h"
    assert rate(1e-5, "inferences") == "0.036 inferences/h"
    keys = {"model": ["svc", "ridge", "mlp"], "precision": ["fp32", "fp32", "fp32"]}
    table = pd.DataFrame(keys | {"xeon": [0.621, 2.5e5, 10.0]})
    ci = pd.DataFrame(keys | {"xeon": [0.0083, 5e3, 6.0]})
    for frame in (table, ci):
        frame.attrs["keys"] = list(keys)  # as the tables' pivot records its row key
    cells = shown({"throughput": table, "throughput_ci95": ci})["throughput"]["xeon"].tolist()
    assert cells[:2] == ["37.3/min ±0.498/min", "250 k/s ±5 k/s"]  # a CI in its figure's span
    # A CI over half the figure: the figure is not resolved, and the cell says so.
    assert cells[2] == "10/s ±6/s UNRESOLVED (95% CI over half the figure)"
    # The tables' notes count such cells and say what narrows them.
    from ecopipe.aggregation.tables import unresolved_cells

    assert unresolved_cells({"throughput": table, "throughput_ci95": ci}) == 1
    ci["xeon"] = [0.4, 1.3e5, 6.0]  # 0.4 is over half of 0.621, 1.3e5 over half of 2.5e5
    assert unresolved_cells({"throughput": table, "throughput_ci95": ci}) == 3
    assert unresolved_cells({"throughput": table}) == 0  # no CI: nothing to judge


def test_the_summary_gives_the_peak_memory_the_trace_saw():
    """optimum-benchmark's report leads with latency and peak memory: the summary gives both, the RAM
    peak from the job's process as sampled, the GPU's from NVML (every process's memory on it)."""
    from ecopipe.monitor.sampler import Trace

    samples = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "process.rss_mb": [900.0, 2048.0, 1000.0],
                            "gpu0.memory_used_mb": [1024.0, 30720.0, 2048.0],
                            "gpu1.memory_used_mb": [0.0, 1024.0, 40960.0]})  # fmt: skip
    traced = result(trace=Trace(samples, 2.0, 0.1))
    metrics = report.inference_metrics(traced)
    assert (metrics["peak_rss_mb"], metrics["peak_gpu_memory_mb"]) == (2048.0, 43008.0)  # both GPUs at once
    (line,) = [line for line in summarise(traced).splitlines() if line.startswith("  memory")]
    assert line == (
        "  memory      peak 2 GiB resident (the job's main process, sampled); GPU peak 42 GiB in use "
        "(NVML: every process's)"
    )
    assert not [line for line in summarise(result()).splitlines() if line.startswith("  memory")]
