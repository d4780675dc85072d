"""Bad input leaves no run; a job that fails after its start ends FAILED and keeps what it measured."""

from __future__ import annotations

import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag, TagFamily
from ecopipe.reference import UnknownRegionError
from ecopipe.sensors.cpu_share import visible_cpus
from ecopipe.sensors.estimated import cpu_power
from tests.conftest import run_cli
from tests.job.conftest import between


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
