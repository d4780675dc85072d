"""The default job end to end on real parts: Hydra config, scikit-learn, sensors, a SQLite MLflow store."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.monitor.energy import machine_meter
from ecopipe.names import Tag, TagFamily
from ecopipe.reference import UnknownRegionError
from ecopipe.sensors import discovery
from ecopipe.sensors.base import Source
from ecopipe.sensors.cpu_share import visible_cpus
from ecopipe.sensors.estimated import cpu_power
from ecopipe.units import eng
from tests.conftest import run_cli
from tests.fakes import powercap_with_dram


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


def between(joules: float, seconds: float, low_w: float, high_w: float) -> bool:
    return low_w * seconds * (1 - 1e-9) <= joules <= high_w * seconds * (1 + 1e-9)


def test_default_job_end_to_end(make_cfg, client):
    outcome = run_job(make_cfg())
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "estimated_specpower"
    assert tags[TagFamily.ENERGY_MEASURED.of("cpu")] == "false"
    assert tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "none" and metrics["energy_gross_j.gpu"] == 0
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


def test_monitor_rapl_false_estimates_beside_a_readable_rapl(make_cfg, client, monkeypatch, tmp_path):
    """A RAPL tree this machine lacks, faked in sysfs layout: readable, yet set aside on request."""
    monkeypatch.setattr(discovery, "POWERCAP_ROOT", powercap_with_dram(tmp_path / "powercap"))
    meter = machine_meter([])  # what the job's meter finds without the key: RAPL for the CPU and the RAM
    assert {s.source for s in meter.sensors} == {Source.RAPL}
    meter.close()
    outcome = run_job(make_cfg("monitor.rapl=false"))
    tags = client.get_run(outcome.run_id).data.tags
    assert (tags[TagFamily.ENERGY_SOURCE.of("cpu")], tags[TagFamily.ENERGY_SOURCE.of("ram")]) == (
        "estimated_specpower",
        "estimated_rss",
    )
    assert (tags[TagFamily.ENERGY_SET_ASIDE.of("cpu")], tags[TagFamily.ENERGY_SET_ASIDE.of("ram")]) == (
        "rapl",
        "rapl",
    )
    assert "cpu estimated_specpower (ESTIMATE: rapl set aside on request)" in outcome.summary


class CountingZones:
    """The fake RAPL zones' counters advance as a real package's would, at `watts` each, while a job runs."""

    def __init__(self, root: Path, watts: float) -> None:
        self.files = [p for p in root.rglob("energy_uj") if "psys" not in (p.parent / "name").read_text()]
        self.watts, self._stop = watts, threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)

    def _count(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.005):
            now = time.perf_counter()
            for path in self.files:  # written beside, then renamed: a reader never sees half a file
                spare = path.with_name("energy_uj.next")
                spare.write_text(f"{int(path.read_text()) + int(self.watts * (now - last) * 1e6)}\n")
                spare.replace(path)
            last = now

    def __enter__(self) -> CountingZones:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_rapl_charges_the_job_its_share_and_logs_the_whole_machine(make_cfg, client, monkeypatch, tmp_path):
    """A RAPL tree this machine lacks, faked in sysfs layout with counters that move: the job is charged
    its share of busy CPU time, the whole machine's figure stands beside it, and the words say so."""
    root = powercap_with_dram(tmp_path / "powercap")
    monkeypatch.setattr(discovery, "POWERCAP_ROOT", root)
    with CountingZones(root, watts=20.0):
        shared = run_job(make_cfg())
        whole = run_job(make_cfg("monitor.rapl_attribution=whole_machine", "seed=1"))
    run = client.get_run(shared.run_id).data
    assert (run.tags[TagFamily.ENERGY_SOURCE.of("cpu")], run.tags[TagFamily.ENERGY_SOURCE.of("ram")]) == (
        "rapl_job_share",
        "rapl_job_share",
    )
    assert run.tags[TagFamily.ENERGY_MEASURED.of("cpu")] == "true" and run.tags[Tag.FIGURES] == "measured"
    share, metrics = run.metrics["job_cpu_share"], run.metrics
    assert 0 < share <= 1
    # The job's gross CPU energy is its share of the whole package's, trial by trial.
    assert metrics["energy_gross_j.cpu"] <= metrics["energy_machine_j.cpu"]
    history = {
        key: [m.value for m in sorted(client.get_metric_history(shared.run_id, key), key=lambda m: m.step)]
        for key in ("trial_energy_j.cpu", "trial_job_cpu_share", "trial_energy_machine_j.cpu")
    }
    for job, part, whole_machine in zip(*history.values(), strict=True):
        assert 0 < part <= 1 and job == pytest.approx(part * whole_machine, rel=1e-9)
    assert (
        "attribution cpu and ram from RAPL, which counts every process: charged the job's" in shared.summary
    )
    assert "cpu rapl_job_share" in shared.summary
    other = client.get_run(whole.run_id).data
    assert other.tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "rapl" and "job_cpu_share" not in other.metrics
    assert "energy_machine_j.cpu" not in other.metrics and "attribution" not in whole.summary


@pytest.mark.parametrize(
    "override,error",
    [
        ("region=NARNIA", UnknownRegionError),
        ("batch_size=0", ConfigError),
        ("dataset=diabetes", ConfigError),
        ("precision=int8", ConfigError),
        ("hardware.device=cuda:3", ConfigError),
    ],
)
def test_bad_input_leaves_no_run(make_cfg, client, override, error):
    with pytest.raises(error):
        run_job(make_cfg(override))
    experiment = client.get_experiment_by_name("ecopipe")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert runs == []


def test_failure_after_start_marks_run_failed_and_keeps_measurements(make_cfg, client, monkeypatch):
    from ecopipe import job

    def broken(*args, **kwargs):
        raise RuntimeError("impact exploded")

    monkeypatch.setattr(job, "run_impact", broken)
    with pytest.raises(RuntimeError):
        run_job(make_cfg())
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    assert run.info.status == "FAILED"
    assert "impact exploded" in run.data.tags[Tag.ERROR]
    # Measured before the failure, kept: the window's CPU estimate, between its idle and full figures.
    metrics, coefficients, threads = run.data.metrics, cpu_power().coefficients, visible_cpus().count
    idle, full = coefficients.idle_w[1] * threads, coefficients.full_w[1] * threads
    assert between(metrics["energy_gross_j.cpu"], metrics["window_s"], idle, full)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["region=NARNIA"], "NARNIA"),
        (["batch_size=0"], "batch_size=0"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["nokey=1"], "nokey"),
        (["batch_size=abc"], "batch_size"),
    ],
)
def test_cli_bad_input_is_one_clear_message(tmp_path, args, needle):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    db = tmp_path / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")


def test_cli_default_job(tmp_path):
    done = run_cli("monitor=quick", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "per 1,000 inferences" in done.stdout
    assert "data        digits (default for tabular_classification" in done.stdout
    assert (tmp_path / "mlflow.db").exists()


def test_failure_mid_measurement_keeps_finished_phases(make_cfg, client, monkeypatch):
    """Trial 2 fails: the load, fit, idle and trial-1 figures logged are exactly what was measured."""
    from ecopipe.stages import inference

    real_trial, real_metered, real_idle = inference._trial, inference._metered, inference.measure_idle
    windows, idle, trials = [], [], []  # what each phase measured, seen by spies on the real functions

    def metered(*args, **kwargs):  # load, then fit
        window, value = real_metered(*args, **kwargs)
        windows.append(window)
        return window, value

    def baseline(*args, **kwargs):
        idle.append(real_idle(*args, **kwargs))
        return idle[-1]

    def second_trial_runs_out_of_memory(*args, **kwargs):
        if len(trials) == 1:
            raise MemoryError("simulated out-of-memory in trial 2")
        trials.append(real_trial(*args, **kwargs))
        return trials[-1]

    monkeypatch.setattr(inference, "_metered", metered)
    monkeypatch.setattr(inference, "measure_idle", baseline)
    monkeypatch.setattr(inference, "_trial", second_trial_runs_out_of_memory)
    with pytest.raises(MemoryError):
        run_job(make_cfg())
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    assert run.info.status == "FAILED" and "trial 2" in run.data.tags[Tag.ERROR]
    metrics = run.data.metrics
    (load, fit), (idle_window,), ((first, _, _),) = windows, idle, trials
    power = idle_window.window.power
    assert (metrics["load_s"], metrics["load_energy_j"]) == (load.duration_s, load.energy.total)
    assert (metrics["fit_s"], metrics["fit_energy_j"]) == (fit.duration_s, fit.energy.total)
    assert {k: metrics[f"idle_power_w.{k}"] for k in ("gpu", "cpu", "ram", "total")} == power.as_dict()
    assert metrics["idle_power_w.total"] == pytest.approx(power.cpu + power.ram + power.gpu, rel=1e-12)
    assert power.gpu == 0  # no GPU here: nothing is charged to one
    # Trial 1 as measured: its energy by component, window and samples (whole passes over the
    # 450-row test split of digits, ceil(0.25 x 1,797)), and nothing from trial 2.
    energy = first.window.energy
    assert metrics["trial_energy_j"] == energy.total
    assert [metrics[f"trial_energy_j.{c}"] for c in ("gpu", "cpu", "ram")] == [
        energy.gpu,
        energy.cpu,
        energy.ram,
    ]
    assert energy.total == pytest.approx(energy.gpu + energy.cpu + energy.ram, rel=1e-12)
    assert metrics["trial_window_s"] == first.window.duration_s and metrics["trial_samples"] == first.samples
    assert first.samples % 450 == 0
    assert metrics["trial_energy_per_1k_j"] == pytest.approx(1000 * energy.total / first.samples, rel=1e-12)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "trial_energy_j")] == [0]
    assert not any(k.startswith(("energy_per_1k", "energy_gross_j", "co2e", "ess")) for k in metrics)
    # The kept figures say how they were obtained: the meter's sources are tagged before measuring.
    tags = run.data.tags
    assert (
        tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "none"
        and tags[TagFamily.ENERGY_MEASURED.of("gpu")] == "false"
    )
    assert tags[TagFamily.ENERGY_SOURCE.of("cpu")] in ("rapl", "estimated_specpower")
    assert (
        tags[TagFamily.ENERGY_MEASURED.of("cpu")]
        == str(tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "rapl").lower()
    )
    assert (
        tags[TagFamily.ENERGY_SOURCE.of("ram")] in ("rapl", "estimated_rss")
        and TagFamily.ENERGY_METHOD.of("cpu") in tags
    )


def test_run_names_tell_different_configs_apart_and_keep_repeats_together(make_cfg, client):
    """The name's parts (model, data, precision, batch) do not show every key: a hash of the config
    without its repeat keys ends it, so that an override the parts miss gets another name, and the
    seeds of one config share theirs."""
    first = run_job(make_cfg("dataset.limit=100"))
    other = run_job(make_cfg("dataset.limit=200"))
    seed = run_job(make_cfg("dataset.limit=100", "seed=1"))
    names = [client.get_run(o.run_id).info.run_name for o in (first, other, seed)]
    assert all(re.fullmatch(r"logistic_regression-digits-fp32-bs64-[0-9a-f]{6}", n) for n in names)
    assert names[0] != names[1] and names[0] == names[2]
    hashes = [client.get_run(o.run_id).data.tags[Tag.CONFIG_HASH] for o in (first, seed)]
    assert hashes[0] != hashes[1]  # a seed is still its own config for resuming sweeps


def test_the_job_ends_with_its_run_and_how_to_open_it(store, tmp_path, client):
    done = run_cli(f"tracking.uri={store}", "model=decision_tree", "monitor=quick", "monitor.trials=2",
                   "monitor.min_window_s=0.05", "monitor.idle_s=0.05", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    experiment = run.info.experiment_id
    assert done.stdout.strip().splitlines()[-2:] == [
        f"  run         {run.info.run_id} in {store}",
        f"  view        `mlflow ui --backend-store-uri {store}` (in a checkout: `make ui STORE=<its file>`), "
        f"then http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey=ecopipe-headline  "
        "(every run's headline figures)",
    ]


def test_the_view_and_the_note_are_renewed_when_ecopipe_wrote_them_and_kept_when_a_user_did(client, store):
    """An experiment an older ecopipe made gets the view's link and the current view; a view or a note
    that a user wrote over them stays."""
    from ecopipe.tracking import ensure_experiment
    from ecopipe.ui_view import VIEW_TAG, view_state

    old_note = "**ecopipe**: what ML inference costs the planet. One run per job (...)"
    older = client.create_experiment("older", tags={Tag.NOTE: old_note})
    stale = {"name": "ecopipe: the headline figures", "createdAt": 1, "state": "{}", "ecopipe": 0}
    client.set_experiment_tag(older, VIEW_TAG, json.dumps(stale))
    ensure_experiment(client, store, "older")
    tags = client.get_experiment(older).tags
    assert tags[Tag.NOTE].startswith(
        f"**[Open the headline view](#/experiments/{older}/runs?viewStateShareKey="
    )
    assert json.loads(json.loads(tags[VIEW_TAG])["state"]) == view_state()
    # The UI's "Override saved view" writes the user's own (no ecopipe mark); a user's note is theirs.
    users_view = json.dumps({"name": "mine", "createdAt": 2, "state": json.dumps({"selectedColumns": []})})
    client.set_experiment_tag(older, VIEW_TAG, users_view)
    client.set_experiment_tag(older, Tag.NOTE, "my notes")
    ensure_experiment(client, store, "older")
    tags = client.get_experiment(older).tags
    assert (tags[VIEW_TAG], tags[Tag.NOTE]) == (users_view, "my notes")
