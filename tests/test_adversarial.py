"""Issue 29's adversarial cases, one test (or two) per case in its order, each the way a user or a
scheduler meets it: the command line, a real store, a real signal to a real process. Each failed before
its fix; test_N is case N. The earlier lists' cases stay in test_refusals, test_stops and test_sweep."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag
from tests.conftest import FAST, run_cli
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


def refused_in_one_line(tmp_path: Path, *cases: tuple[list[str], str]) -> None:
    for args, needle in cases:
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2 and needle in done.stderr, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_7_a_store_in_memory_is_refused_in_one_line(tmp_path):
    # Its runs would die with the process: every measurement lost without a word.
    refused_in_one_line(
        tmp_path,
        (["tracking.uri=sqlite:///:memory:"], "an in-memory store loses every run when the process ends"),
    )


def test_8_experiment_names_mlflow_cannot_hold_are_refused_in_one_line(tmp_path):
    # An empty name was a traceback; a 300-byte one opened the run, then failed on "File name too long".
    refused_in_one_line(
        tmp_path,
        (["tracking.experiment="], "tracking.experiment is empty"),
        ([f"tracking.experiment={'x' * 300}"], "tracking.experiment is 300 bytes long: at most 200"),
        (["-m", "seed=0,1", "tracking.experiment="], "tracking.experiment is empty"),
    )


def test_9_reimpact_refuses_a_bare_key_in_one_line(make_cfg, store, client, tmp_path):
    # OmegaConf read a bare key as null: "Unknown region 'None'".
    run_id = run_job(make_cfg()).run_id
    done = run_cli(
        "--run-id", run_id, "--tracking-uri", store, "region", cwd=tmp_path, module="ecopipe.reimpact"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "ecopipe.reimpact: error: region needs =VALUE: region=ZONE or impact.<key>=VALUE."
    ]
    assert len(client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])) == 1


def test_10_a_corrupt_or_truncated_store_is_refused_before_the_model_is_built(make_cfg, store, tmp_path):
    run_job(make_cfg())  # a real store, then a copy cut short, and a file of noise
    real = Path(store.removeprefix("sqlite:///"))
    cut = tmp_path / "cut.db"
    cut.write_bytes(real.read_bytes()[:50])
    noise = tmp_path / "noise.db"
    noise.write_bytes(bytes(range(256)) * 20)
    for path, why in ((cut, "database disk image is malformed"), (noise, "file is not a database")):
        for module, args in (
            ("ecopipe", [f"tracking.uri=sqlite:///{path}"]),
            ("ecopipe.aggregate", ["--tracking-uri", f"sqlite:///{path}"]),
        ):
            done = run_cli(*args, cwd=tmp_path, module=module)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
            (line,) = done.stderr.strip().splitlines()
            assert f"{path} cannot be read as a database ({why})" in line


class NotMlflow(BaseHTTPRequestHandler):
    """A web server that is not MLflow (404 to the tracking API) or one that wants a password (401
    unless the request brings user:secret); it counts the requests."""

    requests: list[str] = []

    def do_GET(self) -> None:
        NotMlflow.requests.append(self.path)
        wants = base64.b64encode(b"user:secret").decode()
        if self.path.startswith("/login/"):  # wants a password for everything under this prefix
            if self.headers.get("Authorization") != f"Basic {wants}":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.end_headers()
                return
            body, code = b'{"experiments": []}', 200
        else:
            body, code = b"<html>not here</html>", 404
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_11_a_server_that_refuses_or_is_not_mlflow_is_refused_before_any_work(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for uri, password, needle in (
            (address, None, "answers, but not as an MLflow tracking server (HTTP 404"),
            (
                f"{address}/login",
                None,
                "the tracking server asks for credentials and none were sent (HTTP 401",
            ),
            (f"{address}/login", "wrong", "the tracking server refused the credentials sent (HTTP 401"),
        ):
            NotMlflow.requests = []
            if password:
                monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
                monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            done = run_cli(f"tracking.uri={uri}", cwd=tmp_path)
            assert done.returncode == 2 and needle in done.stderr, done.stderr[-2000:]
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert len(NotMlflow.requests) == 1  # the check; nothing was built or sent after it
        # The right credentials pass the check; the job then fails on the stand-in's other answers.
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
        done = run_cli(f"tracking.uri={address}/login", "model=decision_tree", *FAST, cwd=tmp_path)
        assert done.returncode != 0 and "refused" not in done.stderr, done.stderr[-2000:]
        assert len(NotMlflow.requests) > 1
    finally:
        server.shutdown()


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for this process: a read-only bind mount for root (whom permissions do
    not stop), its permission bits for anyone else."""
    mounted: list[Path] = []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            for path in [*folder.rglob("*"), folder]:
                path.chmod(0o555 if path.is_dir() else 0o444)
            return
        for command in (["mount", "--bind", folder, folder], ["mount", "-o", "remount,ro,bind", folder]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a read-only folder here: {done.stderr.strip()}")
            if command[1] == "--bind":
                mounted.append(folder)

    yield make
    for folder in mounted:
        subprocess.run(["umount", folder], check=True)


def test_12_a_read_only_store_is_aggregated_to_a_folder_elsewhere(tmp_path, read_only, make_cfg):
    archive = tmp_path / "archive"
    archive.mkdir()
    store = f"sqlite:///{archive / 'mlflow.db'}"
    done = run_cli(f"tracking.uri={store}", "model=decision_tree", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    read_only(archive)
    out = tmp_path / "tables"
    done = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), cwd=tmp_path,
                   module="ecopipe.aggregate")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is read-only, so nothing was written to it" in (out / "summary.md").read_text()
    assert "decision_tree" in (out / "tables" / "energy_gross.csv").read_text()
    # Logging to the sweep's parent run writes: refused in one line, before any work.
    done = run_cli(
        "--tracking-uri", store, "--sweep", "0" * 32, "--log", cwd=tmp_path, module="ecopipe.aggregate"
    )
    assert done.returncode == 2 and "is read-only; leave --log out" in done.stderr, done.stderr[-2000:]


def test_13_a_resumed_sweep_says_which_reused_runs_other_code_measured_and_can_remeasure_them(
    tmp_path, store, client
):
    assert sweep(tmp_path, store, "model=decision_tree").returncode == 0
    (earlier,) = runs_of(client, parents(client)[0].info.run_id)
    this_version = earlier.data.tags[Tag.CODE_VERSION]
    # As a run of an older ecopipe left it: measured before a fix to the measurement.
    client.set_tag(earlier.info.run_id, Tag.CODE_VERSION, "0123456789ab")
    again = sweep(tmp_path, store, "model=decision_tree")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 reused (measured earlier, 1 of them by another code version" in again.stdout
    parent = parents(client)[-1]
    assert runs_of(client, parent.info.run_id) == []  # reused, as before
    assert parent.data.tags[f"ecopipe.reused_other_code.{earlier.info.run_id}"] == "0123456789ab"
    notes = (tmp_path / "multirun" / "aggregate" / "summary.md").read_text()
    assert "1 of them were measured by another code version (0123456789ab) than this sweep's" in notes
    # The key that re-measures them; then the new run is the one reused, with nothing to say.
    remeasured = sweep(tmp_path, store, "model=decision_tree", "rerun_other_version=true")
    assert remeasured.returncode == 0, remeasured.stderr[-3000:]
    (new,) = runs_of(client, parents(client)[-1].info.run_id)
    assert new.data.tags[Tag.CODE_VERSION] == this_version
    last = sweep(tmp_path, store, "model=decision_tree", "rerun_other_version=true")
    assert last.returncode == 0 and "another code version" not in last.stdout
    parent = parents(client)[-1]
    assert (
        runs_of(client, parent.info.run_id) == [] and f"ecopipe.reused.{new.info.run_id}" in parent.data.tags
    )


def test_14_aggregate_refuses_a_sweep_that_is_not_there_in_one_line(make_cfg, store, tmp_path):
    run_job(make_cfg())
    args = [
        "--experiment",
        "ecopipe",
        "--tracking-uri",
        store,
        "--sweep",
        "BADID",
        "--out",
        str(tmp_path / "o"),
    ]
    done = run_cli(*args, cwd=tmp_path, module="ecopipe.aggregate")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"ecopipe.aggregate: error: --sweep BADID: Run with id=BADID not found in {store}"
    ]
