"""Issue 29's adversarial cases 1 to 6, one test (or two) per case in its order.

Each is met the way a user or a scheduler meets it: the command line, a real store, a real signal to a
real process. Each failed before its fix; test_N is case N. Cases 7 to 14 are in test_cases_7_14; the
earlier lists' cases stay in test_refusals, test_stops and test_sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag
from tests.conftest import run_cli
from tests.test_refusals import no_runs
from tests.test_stops import LONG_WINDOW, ROOT, job_runs, start
from tests.test_sweep import parents, runs_of, sweep


def samplers_of(launcher: subprocess.Popen[str], count: int, tmp_path: Path) -> list[psutil.Process]:
    """The sampler processes of `count` jobs, once each job's measured window is under way."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        probes = []
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if "ecopipe.monitor.probe" in " ".join(child.cmdline()):
                    probes.append(child)
            except psutil.NoSuchProcess:
                continue
        traces = list((tmp_path / "tmp").glob("ecopipe-trace-*/trace.jsonl"))
        if len(probes) == count and len(traces) == count:
            time.sleep(1.0)  # a little way into the windows
            return probes
        time.sleep(0.2)
    raise AssertionError(f"{count} measured windows never ran at once")


# The first test of a fresh clone: two joblib workers import torch, transformers and MLflow from a venv
# no process has read yet (a cold page cache took over 180 s on a 2-core VM); samplers_of allows 300 s.
@pytest.mark.timeout(420)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_1_a_stop_to_a_parallel_sweeps_launcher_ends_every_job_run_killed(tmp_path, store, signum):
    # `kill` and Kubernetes signal the launcher's pid only; joblib then kills its workers outright.
    sweep = start(
        tmp_path,
        store,
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "monitor.allow_shared_cpu=true",
        "model=decision_tree",
        "seed=0,1",
        *LONG_WINDOW,
        multirun=True,
    )
    samplers = samplers_of(sweep, 2, tmp_path)
    sweep.send_signal(signum)
    _, err = sweep.communicate(timeout=180)
    assert sweep.returncode == -signum, err[-3000:]
    runs = job_runs(store)
    assert len(runs) == 3, [r.info.run_name for r in runs]  # the parent and both jobs
    name = signal.Signals(signum).name
    for run in runs:
        assert run.info.status == "KILLED", (run.info.run_name, err[-3000:])
        assert run.data.tags[Tag.ERROR] == f"stopped by {name}"
    for sampler in samplers:
        sampler.wait(timeout=30)
    assert list((tmp_path / "tmp").glob("ecopipe-trace-*")) == []


def test_2_a_sweep_whose_end_fails_exits_non_zero_and_ends_its_parent_failed(tmp_path, store, client):
    """Hydra turns a callback's error into a warning: before, the sweep exited 0 with its parent RUNNING.
    Here the tables cannot be written (a file stands where their folder goes, as a full disk would)."""
    (tmp_path / "multirun").mkdir()
    (tmp_path / "multirun" / "aggregate").write_text("not a folder")
    done = sweep(tmp_path, store, "seed=0")
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("ecopipe: error:")]
    assert len(errors) == 1 and errors[0].startswith("ecopipe: error: the sweep's end failed: ")
    (parent,) = parents(client)
    assert parent.info.status == "FAILED" and "the sweep's end failed" in parent.data.tags[Tag.ERROR]
    assert [r.info.status for r in runs_of(client, parent.info.run_id)] == ["FINISHED"]  # the job's kept


def test_2_a_sweep_that_cannot_open_its_parent_run_stops_in_one_line(tmp_path, store, client):
    """Before, Hydra's warning let the sweep run its jobs without a parent run. A deleted experiment of
    the same name is a store that answers but refuses the run."""
    client.delete_experiment(client.create_experiment("gone"))
    done = sweep(tmp_path, store, "seed=0", "tracking.experiment=gone")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("ecopipe: error:")]
    assert errors == [
        "ecopipe: error: the sweep could not start its MLflow run: MlflowException: The experiment "
        f"{client.get_experiment_by_name('gone').experiment_id} must be in the 'active' state. Current state "
        "is deleted."
    ]
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id]) == []  # no job ran


def test_3_the_sampler_removes_its_trace_when_its_job_is_gone_before_its_input_ends(tmp_path):
    # The race of `kill -9`: the job is gone, and the sampler's next sample sees it before the end of its
    # input arrives. A stand-in job whose death does not close the sampler's stdin makes it certain.
    job = subprocess.Popen(["sleep", "600"])
    folder = tmp_path / "ecopipe-trace-job"
    folder.mkdir()
    spec = {"pid": job.pid, "output": str(folder / "trace.jsonl"), "sensors": [], "telemetry": [],
            "min_hz": 1.0, "max_hz": 50.0, "frequency_hz": 20.0}  # fmt: skip
    sampler = subprocess.Popen(
        [sys.executable, "-m", "ecopipe.monitor.probe", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert sampler.stdout.readline().strip() == "ready"
    job.kill()
    job.wait()
    try:
        assert sampler.wait(timeout=30) == 0, sampler.stderr.read()[-3000:]
    finally:
        sampler.stdin.close()
    assert not folder.exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        (
            "impact.pue=1e308",
            "impact.pue=1e\\+308 is invalid: it must be a finite number, 1 or more and at most 5",
        ),
        ("impact.carbon_intensity=1e308", "impact.carbon_intensity=1e\\+308 is invalid"),
    ],
)
def test_4_factors_that_would_overflow_are_refused_before_any_work(make_cfg, client, override, needle):
    # Finite, but beyond a physical bound: the CO2e overflowed and was dropped, and the ESS read 0.
    with pytest.raises(ConfigError, match=needle):
        run_job(make_cfg(override))
    assert no_runs(client)


def test_4_a_footprint_that_overflows_fails_with_its_reason_instead_of_reading_as_missing(make_cfg):
    """The store drops a non-finite metric: a CO2e that is not a number (here from an energy reading that
    is not one, as a sensor glitch would give) would read as a blank, and the ESS as 0."""
    from ecopipe.job import footprint_stages, plan_job

    plan = plan_job(make_cfg("impact.carbon_intensity=2000", "impact.pue=5"))
    measured = run_job(make_cfg()).metrics
    huge = {k: (math.inf if k.startswith("energy_") and v > 0 else v) for k, v in measured.items()}
    with pytest.raises(ValueError, match=r"co2e_g_per_1k, water_l_per_1k not finite: 2000 g/kWh, PUE 5"):
        footprint_stages(huge, plan.factors, 1.0, None, None)
    footprint_stages(measured, plan.factors, 1.0, None, None)  # the same factors on real energy: fine


@pytest.mark.parametrize(
    "override,needle",
    [
        ("monitor.min_iterations=1000000000000", "monitor.min_iterations=1000000000000 is invalid"),
        ("monitor.trials=100000", "at most 1000 \\(measured windows per job\\)"),
        ("dataset.limit=1000000000", "dataset.limit=1000000000 is invalid"),
        ("monitor.frequency_hz=1000", "at most 100 \\(samples per second written to the store\\)"),
        ("dataset.image_size=100000", "dataset.image_size=100000 is invalid"),
        ("model.max_new_tokens=1000000", "model.max_new_tokens=1000000 is invalid"),
    ],
)
def test_5_counts_and_sizes_beyond_their_bounds_are_refused_before_any_work(
    make_cfg, client, override, needle
):
    # Each was an endless job, an out-of-memory one, or hundreds of samples a second into the store.
    with pytest.raises(ConfigError, match=needle):
        run_job(make_cfg(override))
    assert no_runs(client)


def test_5_a_prompt_longer_than_the_model_takes_is_refused_before_the_run_opens(tmp_path):
    # GPT-2 has 1,024 positions: it failed with an IndexError inside the measured run.
    text = ["model.weights=random", "dataset=synthetic_text", "dataset.limit=2"]
    for args, needle in (
        (["model=gpt2", "dataset.seq_len=1100", *text], "one sample needs 1132 token positions"),
        (["model=gpt2", "dataset.seq_len=1000", "model.max_new_tokens=100", *text], "needs 1100 token"),
        (["model=all-MiniLM-L6-v2", "dataset.seq_len=600", *text], "all-MiniLM-L6-v2 has only 512"),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2 and needle in done.stderr, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_6_a_batch_larger_than_the_data_is_reported_as_the_batch_that_ran(make_cfg, client):
    outcome = run_job(make_cfg("batch_size=100000"))  # digits' test split: 450 rows
    run = client.get_run(outcome.run_id).data
    assert run.params["batch_size"] == "100000" and run.metrics["batch_size_used"] == 450
    assert "(batch 450: every sample of the data; batch_size=100000 is larger)" in outcome.summary
    assert client.get_run(run_job(make_cfg()).run_id).data.metrics["batch_size_used"] == 64
