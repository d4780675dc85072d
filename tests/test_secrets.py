"""Issue 30's secrets: a password given in the tracking URI, in every form, is found nowhere ecopipe,
Hydra or MLflow writes: not in the output, Hydra or sweep folders, not in the store, not on stdout or
stderr. A real MLflow server (no authentication: it takes any credentials) is the store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from ecopipe.credentials import redact, split_credentials, strip_credentials
from ecopipe.job import run_job
from tests.conftest import FAST, run_cli

SECRET = "S3cr3t-Pw-71c9"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on a free port of 127.0.0.1: its address and the folder holding its store."""
    folder = tmp_path_factory.mktemp("server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'store.db'}",
         "--artifacts-destination", str(folder / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"http://{address}/health", timeout=1)
            break
        except requests.RequestException:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield address, folder
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def files_holding(secret: str, *folders: Path) -> list[str]:
    return [
        str(path)
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_30_1_to_3_a_password_in_the_uri_is_written_nowhere(tmp_path, mlflow_server):
    address, server_folder = mlflow_server
    host, port = address.split(":")
    runs = [
        # a job with user:password@; a sweep with Hydra's escaped form; a password holding a raw @
        ([f"tracking.uri=http://alice:{SECRET}@{address}", "tracking.experiment=secrets"], 0),
        (["-m", f"tracking.uri=http\\://alice\\:{SECRET}@{host}\\:{port}", "tracking.experiment=secrets",
          "seed=0,1"], 0),
        ([f"tracking.uri=http://alice:{SECRET}@x@{address}", "tracking.experiment=secrets", "seed=2"], 0),
        # a secret no client reads from the environment: refused, and not echoed
        ([f'tracking.uri="http://{address}/?token={SECRET}"'], 2),
    ]  # fmt: skip
    for args, status in runs:
        done = run_cli(*args, "model=decision_tree", *FAST, cwd=tmp_path)
        assert done.returncode == status, done.stderr[-3000:]
        assert SECRET not in done.stdout + done.stderr
    assert files_holding(SECRET, tmp_path, server_folder) == []
    client = MlflowClient(f"http://{address}")
    runs = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])
    jobs = [r for r in runs if r.data.tags.get("ecopipe.kind") != "sweep"]
    assert len(jobs) == 3 and {r.info.status for r in jobs} == {"FINISHED"}  # the sweep reused seed 0
    assert {r.data.params["tracking.uri"] for r in jobs} == {f"http://{address}"}  # usable, and clean


@pytest.mark.parametrize(
    "text,shown,stripped",
    [
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow",
         "postgresql://mlflow@db:5432/mlflow"),
        ("postgresql://mlflow@db/mlflow?password=pw", "postgresql://mlflow@db/mlflow?password=***",
         "postgresql://mlflow@db/mlflow"),
        ("postgresql://m@db/x?sslmode=require&password=pw&application_name=a",
         "postgresql://m@db/x?sslmode=require&password=***&application_name=a",
         "postgresql://m@db/x?sslmode=require&application_name=a"),
        ("postgresql://m:p@ss@db/x", "postgresql://m:***@db/x", "postgresql://m@db/x"),
        ("tracking.uri=http\\://me\\:pw@host\\:5000 seed=1",
         "tracking.uri=http\\://me:***@host\\:5000 seed=1", "tracking.uri=http\\://host\\:5000 seed=1"),
        ("http://host:5000 sqlite:////tmp/a:b@c.db", "http://host:5000 sqlite:////tmp/a:b@c.db",
         "http://host:5000 sqlite:////tmp/a:b@c.db"),
    ],
)  # fmt: skip
def test_30_3_one_mask_for_every_credential_form(text, shown, stripped):
    assert redact(text) == shown and strip_credentials(text) == stripped


def test_30_1_credentials_move_to_the_variables_the_clients_read():
    assert split_credentials("postgresql://m@db/x?password=p%40w&sslmode=require") == (
        "postgresql://m@db/x?sslmode=require",
        {"PGPASSWORD": "p@w"},
    )
    assert split_credentials("postgresql+psycopg://m:p%40w@db:5432/x") == (
        "postgresql+psycopg://m@db:5432/x",
        {"PGPASSWORD": "p@w"},
    )
    assert split_credentials("https://me:p%40w@host") == (
        "https://host",
        {"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "p@w"},
    )
    assert split_credentials("sqlite:////tmp/a:b@c.db") == ("sqlite:////tmp/a:b@c.db", {})


def test_30_4_reimpact_takes_a_planted_interpolation_as_text(make_cfg, client, store, tmp_path, monkeypatch):
    # Anyone who may write a run can plant `${oc.env:...}`: resolved, it printed the reader's secret.
    original = client.get_run(run_job(make_cfg()).run_id)
    experiment = original.info.experiment_id
    planted = client.create_run(experiment, tags=original.data.tags).info.run_id
    params = original.data.params | {"region": "${oc.env:ECOPIPE_READERS_SECRET}"}
    client.log_batch(planted, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in original.data.metrics.items()])  # fmt: skip
    client.set_terminated(planted)
    monkeypatch.setenv("ECOPIPE_READERS_SECRET", SECRET)
    done = run_cli("--run-id", planted, "--tracking-uri", store, cwd=tmp_path, module="ecopipe.reimpact")
    assert done.returncode == 2 and SECRET not in done.stdout + done.stderr, done.stderr[-2000:]
    assert "${oc.env:ECOPIPE_READERS_SECRET}" in done.stderr  # named as it is stored


def test_30_5_names_never_become_paths_outside_their_folder(make_cfg, client, store, tmp_path):
    for name in ("../../../../tmp/x", "/tmp/x"):  # wrote the run's artifacts there
        done = run_cli(f"tracking.uri={store}", f"tracking.experiment={name}", *FAST, cwd=tmp_path)
        assert done.returncode == 2 and "cannot name its artifacts' folder" in done.stderr, done.stderr[
            -2000:
        ]
        assert len(done.stderr.strip().splitlines()) == 1
    # A name planted in a shared store: the aggregation's default folder stays under ./aggregate.
    run_job(make_cfg("model=decision_tree"))
    run_job(make_cfg("model=ridge", "dataset=diabetes"))
    original = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])[0]
    planted = client.create_run(client.create_experiment("../../planted"), tags=original.data.tags)
    client.log_batch(planted.info.run_id, params=[Param(k, v) for k, v in original.data.params.items()])
    client.set_terminated(planted.info.run_id)
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    done = run_cli(
        "--tracking-uri", store, "--experiment", "../../planted", cwd=work, module="ecopipe.aggregate"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "aggregate" / "_.._planted" / "summary.md").is_file()
    assert not (tmp_path / "planted").exists() and not (tmp_path / "work" / "planted").exists()
    # Aggregating again into the same folder leaves no table of the earlier aggregation behind.
    out = tmp_path / "tables"
    both = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), cwd=tmp_path,
                   module="ecopipe.aggregate")  # fmt: skip
    assert both.returncode == 0 and (out / "tables" / "quality_r2.csv").is_file(), both.stderr[-2000:]
    (out / "mine.txt").write_text("a file of the user's")
    only_tree = ["--filter", "params.`model.name` = 'decision_tree'"]
    one = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), *only_tree,
                  cwd=tmp_path, module="ecopipe.aggregate")  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    assert (
        not (out / "tables" / "quality_r2.csv").exists()
        and (out / "tables" / "quality_accuracy.csv").is_file()
    )
    assert (out / "mine.txt").is_file()


def test_30_6_a_database_store_needs_an_artifact_location_every_job_reaches(tmp_path):
    # MLflow put the artifacts in ./mlruns of whichever process created the experiment.
    for args in ([], ["-m", "seed=0,1"]):
        done = run_cli(*args, "tracking.uri=postgresql://mlflow@127.0.0.1:9/mlflow", cwd=tmp_path)
        assert done.returncode == 2 and "Set tracking.artifact_location to" in done.stderr, done.stderr[
            -2000:
        ]
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()


def test_30_6_the_job_says_where_its_artifacts_go(make_cfg, store, tmp_path, caplog):
    location = (tmp_path / "shared" / "artifacts").as_uri()
    with caplog.at_level("INFO", logger="ecopipe.job"):
        run_id = run_job(
            make_cfg(f"tracking.artifact_location={location}", "tracking.experiment=placed")
        ).run_id
    assert f"run {run_id}; its artifacts go to {location}/" in caplog.text
    assert (tmp_path / "shared" / "artifacts").is_dir()
