"""Issue 29's adversarial cases, each the way a user or a scheduler meets it: the command line, a real
store, a real signal to a real process. Each failed before its fix."""

from __future__ import annotations

import base64
import json
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

from tests.conftest import FAST, run_cli
from tests.test_stops import LONG_WINDOW, ROOT, job_runs, start


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
        assert run.data.tags["ecopipe.error"] == f"stopped by {name}"
    for sampler in samplers:
        sampler.wait(timeout=30)
    assert list((tmp_path / "tmp").glob("ecopipe-trace-*")) == []


def test_3_the_sampler_removes_its_trace_when_its_job_is_gone_before_its_input_ends(tmp_path):
    # The race of `kill -9`: the job is gone, and the sampler's next sample sees it before the end of its
    # input arrives. A stand-in job whose death does not close the sampler's stdin makes it certain.
    job = subprocess.Popen(["sleep", "600"])
    folder = tmp_path / "ecopipe-trace-job"
    folder.mkdir()
    spec = {"pid": job.pid, "output": str(folder / "trace.jsonl"), "sensors": [], "gpus": [],
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
            (f"{address}/login", None, "the tracking server refused no credentials (HTTP 401"),
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
