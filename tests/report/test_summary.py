"""summary.py's summary, run description and compact answer, line by line on round numbers."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from ecopipe import report, summary
from ecopipe.config import Attribution, ImpactConfig
from ecopipe.hardware import DeviceProfile
from ecopipe.job import footprint_stages
from ecopipe.monitor.energy import machine_meter
from ecopipe.names import Tag, TagFamily
from ecopipe.results import IdleBaseline, InferenceResult, ModelFacts
from ecopipe.stages.impact import resolve_factors
from tests.report.conftest import FACTORS, result, two

PROFILE = DeviceProfile("h100", "NVIDIA H100 SXM 80GB", "NVIDIA H100", "datacenter", 700.0, None, "table")


def summarise(inference: InferenceResult, config: ImpactConfig = FACTORS, params: float = 500_000.0) -> str:
    """The job's summary, from its logged metrics and the impact stage at each bound, as a job makes it."""
    metrics = report.inference_metrics(inference)
    factors = resolve_factors(config, "WORLD", "datacenter")
    impact, _, stage = footprint_stages(metrics, factors, params, None, None)
    return summary.summary("m-d-fp16-bs8", PROFILE, inference, impact, metrics | stage, "d (as configured)")


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
        for line in summary.summary("m", unlisted, result(), impact, metrics | stage, "d").splitlines()
        if line.startswith("  tier ")
    ]
    assert tier_line.startswith("  tier        datacenter, an ASSUMPTION: not in the hardware table; tier x")
    # The run page's note: the compact answer, the hardware, then one table row per line.
    assert summary.description(text, "the answer").splitlines()[:7] == [
        "the answer",
        "",
        "on NVIDIA H100 SXM 80GB (cuda:0, tier datacenter)",
        "",
        "| | |",
        "|---|---|",
        "| **data** | d (as configured) |",
    ]
    assert "| **quality** | accuracy 0.9123 |" in summary.description(text, "")
    assert summary.description("t  n  h\n  k  a|b", "").splitlines()[-1] == "| **k** | a\\|b |"
    assert summary.description("t  n  h\n  k  v", "").endswith("| **k** | v |\n")


def test_the_compact_answer_fits_the_run_lists_description_column():
    """The run list shows a note's first 50 characters: energy and CO2e per 1,000 and ESS, and what
    they are, in fewer."""
    figures = {"energy_it_j_per_1k": 0.012744, "co2e_g_per_1k": 2.6215e-6, "ess": 247.6}
    answer = summary.compact_answer(figures, "ESTIMATE")
    assert answer == "12.7 mJ/1k est. · 2.62 µg CO2e/1k · ESS 248" and len(answer) <= 50
    large = {"energy_it_j_per_1k": 20283.0, "co2e_g_per_1k": 2.2537, "ess": 0.1234}
    assert summary.compact_answer(large, "measured, WHOLE GPU") == (
        "20.3 kJ/1k measured WHOLE GPU · 2.25 g CO2e/1k · ESS 0.123"
    )
    assert summary.compact_answer({"energy_it_j_per_1k": 1.0}, "SIMULATED") == "1 J/1k SIMULATED"
    # An ESS of thousands in plain digits; an energy whose CI is over half of it leads with UNRESOLVED
    wide = {**figures, "ess": 1612.4, "energy_per_1k_net_ci95_j": 0.007, "energy_per_1k_gross_ci95_j": 0.001}
    assert summary.compact_answer(wide, "ESTIMATE") == "12.7 mJ/1k est. · 2.62 µg CO2e/1k · ESS 1,612"
    assert summary.compact_answer(wide, "ESTIMATE", Attribution.net).startswith("UNRESOLVED 12.7 mJ/1k est.")


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
        text = summary.summary("m", PROFILE, result(trials_stop=stop), impact, metrics | stage, "d", target)
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
