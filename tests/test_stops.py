"""Real processes, real signals: a stopped job or sweep leaves a truthful store and nothing behind;
jobs starting together on a new SQLite store all get their runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from ecopipe.names import Tag
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
# One trial that would last ten minutes: the signal always lands inside the measured window.
LONG_WINDOW = ["monitor=quick", "monitor.trials=1", "monitor.min_window_s=600", "monitor.idle_s=0.05"]


def start(tmp_path: Path, store: str, *args: str, multirun: bool = False) -> subprocess.Popen[str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path / "tmp")}
    return subprocess.Popen(
        [sys.executable, "-m", "ecopipe", *(["-m"] if multirun else []), f"tracking.uri={store}", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def wait_for_sampler(job: subprocess.Popen[str], tmp_path: Path) -> psutil.Process:
    """The sampler process, once the measured window is under way."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()[1][-3000:]
        for child in psutil.Process(job.pid).children(recursive=True):
            try:
                probe = "ecopipe.monitor.probe" in " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            if probe and list((tmp_path / "tmp").glob("ecopipe-trace-*/trace.jsonl")):
                time.sleep(1.0)  # a little way into the window
                return child
        time.sleep(0.2)
    raise AssertionError("the measured window never started")


def job_runs(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    return client.search_runs([experiment], order_by=["start_time ASC"])


def assert_nothing_left(sampler: psutil.Process, tmp_path: Path) -> None:
    sampler.wait(timeout=30)  # raises if the sampler process outlived its job
    assert list((tmp_path / "tmp").glob("ecopipe-trace-*")) == []


@pytest.mark.parametrize("signum,group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_ends_the_run_killed_and_cleans_up(tmp_path, store, signum, group):
    job = start(tmp_path, store, *LONG_WINDOW)
    sampler = wait_for_sampler(job, tmp_path)
    # SIGTERM as a scheduler sends it to the job; SIGINT as Ctrl-C sends it to the whole group.
    os.killpg(job.pid, signum) if group else job.send_signal(signum)
    _, err = job.communicate(timeout=120)
    assert job.returncode == -signum, err[-3000:]  # the exit status says which signal stopped it
    (run,) = job_runs(store)
    name = signal.Signals(signum).name
    assert run.info.status == "KILLED" and run.data.tags[Tag.ERROR] == f"stopped by {name}"
    assert run.data.metrics["load_energy_j"] > 0  # what was measured before the stop is kept
    assert_nothing_left(sampler, tmp_path)


@pytest.mark.parametrize("signum,group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_ends_the_sweep_and_its_parent_run_killed(tmp_path, store, signum, group):
    sweep = start(
        tmp_path,
        store,
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "model=logistic_regression,decision_tree",
        *LONG_WINDOW,
        multirun=True,
    )
    sampler = wait_for_sampler(sweep, tmp_path)
    os.killpg(sweep.pid, signum) if group else sweep.send_signal(signum)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == -signum, err[-3000:]
    parent, child = job_runs(store)  # the second job never started
    assert parent.data.tags[Tag.KIND] == "sweep"
    for run in (parent, child):
        assert run.info.status == "KILLED"
        assert run.data.tags[Tag.ERROR] == f"stopped by {signal.Signals(signum).name}"
    assert child.data.tags[Tag.PARENT_RUN] == parent.info.run_id
    assert_nothing_left(sampler, tmp_path)


def test_sigkill_leaves_no_trace_folder(tmp_path, store):
    job = start(tmp_path, store, *LONG_WINDOW)
    sampler = wait_for_sampler(job, tmp_path)
    job.kill()
    job.communicate(timeout=60)
    assert_nothing_left(sampler, tmp_path)  # the sampler saw its job die and removed the trace


def test_four_jobs_at_once_on_a_new_sqlite_store(tmp_path, store):
    jobs = [start(tmp_path, store, *FAST, f"seed={seed}") for seed in range(4)]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
    runs = job_runs(store)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_stop_inside_a_store_call_is_raised_when_the_call_ends(store, monkeypatch):
    # An exception raised in the middle of an SQLite transaction could leave the store locked for
    # every other process; the job's client lets the call finish, then stops.
    from ecopipe import stops
    from ecopipe.config import TrackingConfig
    from ecopipe.tracking.experiment import open_experiment

    client, experiment = open_experiment(TrackingConfig(uri=store))
    run_id = client.create_run(experiment).info.run_id
    set_tag, calls = MlflowClient.set_tag, []

    def signal_then_tag(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives inside the call
        calls.append("went on after the signal")
        return set_tag(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", signal_then_tag)
    monkeypatch.setattr(stops, "_first_stop", None)  # this test process goes on after its stop
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with stops.stop_on_signals(), pytest.raises(stops.Stopped):
            client.set_tag(run_id, "written", "whole")
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert calls == ["went on after the signal"]
    assert MlflowClient(store).get_run(run_id).data.tags["written"] == "whole"
