"""The default job end to end on real parts: Hydra config, scikit-learn, sensors, a SQLite MLflow store."""

from __future__ import annotations

import json
import re

import pandas as pd
import psutil
import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Metric, Tag, TagFamily
from ecopipe.sensors.cpu_share import visible_cpus
from ecopipe.sensors.estimated import cpu_power
from ecopipe.units import eng
from tests.job.conftest import between


def render_summary(result) -> str:
    """The aggregation's summary.md as a reader opens it."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        result.write(Path(folder))
        return (Path(folder) / "summary.md").read_text()


# WORLD's grid (Ember 2025, lifecycle) and EWIF (WRI 2020); a data-centre tier's PUE and on-site WUE.
WORLD_G_PER_KWH, WORLD_EWIF_L_PER_KWH = 473.01, 4.81
DATACENTER_PUE, DATACENTER_WUE_L_PER_KWH = 1.56, 0.55


def test_default_job_end_to_end(make_cfg, client):
    outcome = run_job(make_cfg())
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "estimated_specpower"
    assert tags[TagFamily.ENERGY_MEASURED.of("cpu")] == "false"
    assert tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "none" and metrics["energy_gross_j.gpu"] == 0
    assert Metric.GPU_WH_PER_1K not in metrics  # no GPU: not the AI Energy Score's metric, not logged
    assert tags[Tag.REGION] == "WORLD"
    assert params["model.name"] == "logistic_regression" and params["dataset.name"] == "digits"
    assert metrics["quality.accuracy"] > 0.9  # a real model on real data
    # digits: 64 features x 10 classes + 10 intercepts, counted on the fitted estimator
    assert metrics["parameters"] == 650
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"config.yaml", "environment.json", "summary.txt"} <= artifacts

    # The CPU estimate is the job's threads x SPECpower watts per thread of this CPU, between the idle
    # and the full-load figure, at each bound and in every phase.
    cpu = cpu_power()
    threads = visible_cpus().count
    idle, full = (
        tuple(w * threads for w in ends) for ends in (cpu.coefficients.idle_w, cpu.coefficients.full_w)
    )
    for i, end in enumerate(("_low", "", "_high")):
        assert between(metrics[f"energy_gross_j.cpu{end}"], metrics["window_s"], idle[i], full[i]), end
        assert between(metrics[f"idle_power_w.cpu{end}"], 1.0, idle[i], full[i]), end
    # RAM: what this process holds beyond the SPECpower servers' memory for these threads, x 0.375 W/GB.
    held_gb = psutil.Process().memory_info().rss / 2**30
    beyond = max(0.0, held_gb - cpu.coefficients.memory_gb_per_thread * threads)
    assert metrics["energy_gross_j.ram"] == pytest.approx(
        0.375 * beyond * metrics["window_s"], rel=0.5, abs=1e-9
    )
    # Loading and fitting (CPU + RAM): at least the idle figure, at most the full-load one plus RAM at up
    # to 1.5x what this process holds now. A phase charged more than the share could draw falls outside.
    ram_w = 0.375 * 1.5 * held_gb
    for phase in ("load", "fit"):
        assert between(metrics[f"{phase}_energy_j"], metrics[f"{phase}_s"], idle[1], full[1] + ram_w), phase

    # CO2e, water and ESS from the job's energy by hand, with the published WORLD and tier factors.
    assert tags[Tag.TIER] == "datacenter"  # a server CPU (EPYC, Xeon): this machine's, and CI's
    kwh = metrics["energy_per_1k_gross_j"] / 3.6e6
    co2e = kwh * DATACENTER_PUE * WORLD_G_PER_KWH
    water = kwh * DATACENTER_WUE_L_PER_KWH + kwh * DATACENTER_PUE * WORLD_EWIF_L_PER_KWH
    assert metrics["co2e_g_per_1k"] == pytest.approx(co2e, rel=1e-9)
    assert metrics["water_l_per_1k"] == pytest.approx(water, rel=1e-9)
    assert metrics["ess"] == pytest.approx(650 / 1e6 / co2e, rel=1e-9)


def test_the_mlflow_ui_gets_a_description_headline_metrics_and_system_metrics(make_cfg, client):
    outcome = run_job(make_cfg())
    run = client.get_run(outcome.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    # The run page's description is the summary, as a Markdown table.
    note = tags[Tag.NOTE]
    assert note.splitlines()[2].startswith("on ")  # the hardware after the answer, no heading
    for row in ("| **energy** |", "| **CO2e** |", "| **water** |", "| **ESS** |", "| **quality** |"):
        assert row in note
    assert "estimated_specpower (ESTIMATE)" in note

    # Headline metrics: per 1,000 inferences, the raw figures rounded to 4 significant digits.
    def four_digits(value: float) -> float:
        return float(f"{value:.4g}")

    assert metrics["headline/energy_J_per_1k"] == four_digits(metrics["energy_per_1k_gross_j"])
    assert metrics["headline/co2e_mg_per_1k"] == four_digits(metrics["co2e_g_per_1k"] * 1e3)
    assert metrics["headline/water_mL_per_1k"] == four_digits(metrics["water_l_per_1k"] * 1e3)
    assert metrics["headline/accuracy"] == four_digits(metrics["quality.accuracy"])
    assert metrics["headline/ess_Mparams_per_gCO2e"] == four_digits(metrics["ess"])
    assert metrics["headline/throughput_per_s"] == four_digits(metrics["throughput_per_s"])
    # The trace as MLflow system metrics: one step per sample, in time order, inside the run. (Here the
    # CPU has no power sensor to sample, so utilisation and memory; sensors add power_w.<sensor>.)
    cpu = client.get_metric_history(outcome.run_id, "system/process.cpu_pct")
    assert len(cpu) == metrics["trace_samples"] and any(p.value > 0 for p in cpu)
    assert [p.step for p in cpu] == list(range(len(cpu)))
    assert [p.timestamp for p in cpu] == sorted(p.timestamp for p in cpu)
    assert run.info.start_time <= cpu[0].timestamp <= cpu[-1].timestamp <= run.info.end_time
    assert client.get_metric_history(outcome.run_id, "system/process.rss_mb")
    # No counter here: the System metrics tab plots each component's estimated power, named an
    # estimate, and power_trace.csv holds it.
    power = client.get_metric_history(outcome.run_id, "system/estimated_power_w.cpu")
    assert len(power) == len(cpu) and all(p.value > 0 for p in power)
    assert client.get_metric_history(outcome.run_id, "system/estimated_power_w.ram")
    trace = pd.read_csv(client.download_artifacts(outcome.run_id, "power_trace.csv"))
    assert trace["estimated_power_w.cpu"].tolist() == pytest.approx([p.value for p in power])
    # The experiment opens on its runs and says what it holds.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[Tag.EXPERIMENT_KIND] == "custom_model_development"
    assert "headline/" in experiment.tags[Tag.NOTE]
    # Its description opens with the link to the saved view of the headline columns, whose every
    # column this run has, sorted by energy, and whose keys carry the backticks the UI needs.
    view = json.loads(experiment.tags[TagFamily.SHARED_VIEW.of("ecopipe-headline")])
    state = json.loads(view["state"])
    link = f"#/experiments/{run.info.experiment_id}/runs?viewStateShareKey=ecopipe-headline"
    assert experiment.tags[Tag.NOTE].startswith(f"**[Open the headline view]({link})**")
    assert state["orderByKey"] == "metrics.`headline/energy_J_per_1k`" and state["orderByAsc"]
    for column in state["selectedColumns"]:
        kind, _, name = column.partition(".")
        assert name.startswith("`") and name.endswith("`"), column
        have = {"metrics": metrics, "tags": run.data.tags, "attributes": {"Description": 1}}[kind]
        assert name.strip("`") in have or name.strip("`") == TagFamily.ENERGY_SOURCE.of("gpu"), column
    # The run list's Dataset and Source columns: the data set (its source, and a digest of its config)
    # and what made the run, not `-`.
    (entry,) = run.inputs.dataset_inputs
    assert (entry.dataset.name, json.loads(entry.dataset.source)) == (
        "digits",
        {"source": "sklearn, split test"},
    )
    assert run.data.tags[Tag.SOURCE_NAME] == "ecopipe"
    # The run list's Description column shows the note's first characters: the compact answer.
    first = run.data.tags[Tag.NOTE].splitlines()[0]
    energy = eng(metrics["energy_it_j_per_1k"], "J", 3)
    co2e, ess = eng(metrics["co2e_g_per_1k"], "g", 3), metrics["ess"]
    shown_ess = f"{ess:,.0f}" if ess >= 1000 else f"{ess:.3g}"
    assert first.removeprefix("UNRESOLVED ") == f"{energy}/1k est. · {co2e} CO2e/1k · ESS {shown_ess}"
    assert len(first) <= 50 + len("UNRESOLVED ")


def test_an_estimate_carries_its_band_and_its_name_everywhere(make_cfg, client, store):
    """No counter here: every headline figure is an estimate with a band, in MLflow, the summary and the
    aggregated tables, and nothing the job writes calls it measured."""
    from ecopipe.aggregate import aggregate

    outcome = run_job(make_cfg())
    run = client.get_run(outcome.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags[Tag.FIGURES] == "ESTIMATE"
    assert tags[Tag.CPU_MICROARCH_HOW] in ("name", "table", "flags", "unknown")
    assert tags[Tag.CPU_MICROARCH] == (cpu_power().identity.microarch or "unknown")
    headline = ("energy_J_per_1k", "co2e_mg_per_1k", "water_mL_per_1k")
    for name in headline:
        low, point, high = (metrics[f"headline/{name}{end}"] for end in ("_low", "", "_high"))
        assert low < point < high, name  # the coefficients' range is never zero
    # ESS divides by CO2e: its low end comes from the highest CO2e, its high end from the lowest, which
    # exists only where the CO2e band stays above zero (short windows on a busy machine can take the low
    # end of the CI below it): then the ESS is "at least" its low end, with no upper bound.
    inverse = metrics["ess"] * metrics["co2e_g_per_1k"] / metrics["co2e_g_per_1k_high"]
    assert metrics["ess_low"] == pytest.approx(inverse)
    if metrics["co2e_g_per_1k_low"] > 0:
        assert (
            metrics["headline/ess_Mparams_per_gCO2e_low"]
            < metrics["headline/ess_Mparams_per_gCO2e"]
            < metrics["headline/ess_Mparams_per_gCO2e_high"]
        )
    else:
        assert "headline/ess_Mparams_per_gCO2e_high" not in metrics and "ess_high" not in metrics
    for name in ("energy_per_1k_gross_j", "energy_per_1k_net_j", "energy_per_1k_gross_j.cpu", "co2e_g_per_1k",
                 "water_l_per_1k", "energy_gross_j.total"):  # fmt: skip
        assert metrics[f"{name}_low"] < metrics[name] < metrics[f"{name}_high"], name
    lines = {line.split()[0]: line for line in outcome.summary.splitlines()[1:]}
    for key in ("energy", "CO2e", "water", "ESS"):
        assert ", ESTIMATE" in lines[key], lines[key]
    for key in ("energy", "CO2e", "water"):
        assert "–" in lines[key], lines[key]  # the band
    for text in (outcome.summary, tags[Tag.NOTE]):
        assert not re.search(r"\bmeasured\b", text, re.IGNORECASE), text
    result = aggregate(store, "ecopipe")
    hardware = tags[Tag.HARDWARE]
    assert result.tables["energy_gross_low"].loc[0, hardware] == metrics["energy_per_1k_gross_j_low"]
    summary_md = render_summary(result)
    assert "| energy source |  | estimated_specpower+estimated_rss |" in summary_md
    cell = [line for line in summary_md.splitlines() if line.startswith("| logistic_regression | fp32 |")][0]
    assert "–" in cell and "(" in cell  # the first table's cell: the value and its band


def test_summary_states_source_and_region(make_cfg):
    text = run_job(make_cfg("region=FRA")).summary
    assert "cpu estimated_specpower (ESTIMATE)" in text
    assert "FRA" in text and "per 1,000 inferences" in text
    assert "data        digits (as configured)" in text  # which data set, and why


def test_a_gpu_profile_on_a_cpu_job_is_the_simulated_gpus_and_says_so(make_cfg, client):
    """The GPU check's CPU rehearsal files its runs under the simulated GPU's profile, never the real one."""
    as_h100 = ("hardware=h100", "hardware.device=cpu")
    outcome = run_job(make_cfg(*as_h100, "monitor.fake_gpu_watts=300"))
    tags = client.get_run(outcome.run_id).data.tags
    assert tags[Tag.HARDWARE] == "NVIDIA H100 SXM 80GB (SIMULATED)"
    assert (tags[Tag.HARDWARE_KEY], tags[TagFamily.ENERGY_SOURCE.of("gpu")]) == ("h100", "fake")
    assert " on NVIDIA H100 SXM 80GB (SIMULATED) (cpu, tier datacenter)" in outcome.summary.splitlines()[0]
    # Without a simulated GPU, the CPU's energy would be filed under an H100: refused, and no run.
    with pytest.raises(ConfigError, match="is a GPU profile, but this job runs on the CPU"):
        run_job(make_cfg(*as_h100))
    experiment = client.get_experiment_by_name("ecopipe")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [outcome.run_id]
