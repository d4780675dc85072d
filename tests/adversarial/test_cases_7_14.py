"""Issue 29's adversarial cases 7 to 14, one test per case in its order.

Each is met the way a user or a scheduler meets it: the command line, a real store, a real server, a
read-only folder. Each failed before its fix; test_N is case N. Cases 1 to 6 are in test_cases_1_6; the
earlier lists' cases stay in test_refusals, test_stops and test_sweep."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ecopipe.job import run_job
from ecopipe.names import Tag
from tests.conftest import FAST, run_cli
from tests.test_sweep import parents, runs_of, sweep


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
