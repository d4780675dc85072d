"""Issue 30: a shared store that leaks no secret, writes nowhere it should not and trusts no stranger.

A password given in the tracking URI, in every form, is found nowhere ecopipe,
Hydra or MLflow writes: not in the output, Hydra or sweep folders, not in the store, not on stdout or
stderr. A real MLflow server (no authentication: it takes any credentials) is the store."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from ecopipe.credentials import redact, split_credentials, strip_credentials
from ecopipe.job import run_job
from ecopipe.names import Tag
from ecopipe.tracking.liveness import current_user
from tests.conftest import FAST, mlflow_serving, run_cli

SECRET = "S3cr3t-Pw-71c9"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on a free port of 127.0.0.1: its address and the folder holding its store."""
    folder = tmp_path_factory.mktemp("server")
    store = f"sqlite:///{folder / 'store.db'}"
    with mlflow_serving("server", store, "--artifacts-destination", str(folder / "art")) as address:
        yield address.removeprefix("http://"), folder


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
        # a password no pattern can delimit (a quote, #, a space): refused before anything is written
        ([f'tracking.uri="http://alice:{SECRET}\'x@{address}"'], 2),
        ([f'tracking.uri="http://alice:{SECRET}#x@{address}"'], 2),
        ([f'tracking.uri="postgresql://m@db/x?password={SECRET}#x"'], 2),
        ([f'tracking.uri="http://alice:{SECRET} x@{address}"'], 2),
        # one sweep, two stores (and two passwords): refused
        (["-m", f"tracking.uri=http://alice:{SECRET}@{address},http://bob:{SECRET}2@{address}"], 2),
    ]  # fmt: skip
    for args, status in runs:
        done = run_cli(*args, "model=decision_tree", *FAST, cwd=tmp_path)
        assert done.returncode == status, done.stderr[-3000:]
        assert SECRET not in done.stdout + done.stderr
        if status == 0:  # the output ends with the run's page or the sweep's view, on the server
            last = done.stdout.strip().splitlines()[-1]
            assert last.startswith(f"  view        http://{address}/#/experiments/"), last
            assert last.endswith("runs?viewStateShareKey=ecopipe-headline  (every run's headline figures)")
    assert files_holding(SECRET, tmp_path, server_folder) == []
    client = MlflowClient(f"http://{address}")
    runs = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])
    jobs = [r for r in runs if r.data.tags.get(Tag.KIND) != "sweep"]
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
    # An escaped escape (`\${...}`) reads as a backslash and a live interpolation to OmegaConf.
    escaped = client.create_run(experiment, tags=original.data.tags).info.run_id
    params = original.data.params | {"impact.pue": "\\${oc.env:ECOPIPE_READERS_SECRET}"}
    client.log_batch(escaped, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in original.data.metrics.items()])  # fmt: skip
    done = run_cli("--run-id", escaped, "--tracking-uri", store, cwd=tmp_path, module="ecopipe.reimpact")
    assert done.returncode == 2 and SECRET not in done.stdout + done.stderr, done.stderr[-2000:]


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


# ---------------------------------------------------------------- trust in the store: planted runs


def plant(
    client, run, experiment_id: str | None = None, tags=None, metrics=None, start_ms=None, running=False
) -> str:
    """A copy of `run`, as anyone who may write to the experiment could log it, with what they change."""
    planted = client.create_run(
        experiment_id or run.info.experiment_id, start_time=start_ms, tags=run.data.tags | (tags or {})
    ).info.run_id
    values = run.data.metrics | (metrics or {})
    client.log_batch(planted, params=[Param(k, v) for k, v in run.data.params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in values.items()])  # fmt: skip
    if not running:
        client.set_terminated(planted)
    return planted


def tiny(run) -> dict[str, float]:
    return {k: v * 1e-6 for k, v in run.data.metrics.items() if k.startswith("energy_")}


def test_30_7_a_planted_run_is_not_reused_not_the_latest_and_not_in_the_future(client, store, tmp_path):
    from tests.test_sweep import parents, runs_of, sweep

    assert sweep(tmp_path, store, "model=decision_tree").returncode == 0
    mine_parent = parents(client)[0]
    (mine,) = runs_of(client, mine_parent.info.run_id)
    assert mine.info.user_id == mine.data.tags[Tag.USER] != "unknown"  # whose run it is, recorded
    # Mallory plants the same config with a thousandth of a millijoule, and a later sweep of her own.
    planted = plant(client, mine, tags={"mlflow.user": "mallory"}, metrics=tiny(mine))
    client.delete_run(mine.info.run_id)
    again = sweep(tmp_path, store, "model=decision_tree")
    assert again.returncode == 0 and "0 reused" in again.stdout, again.stdout[-2000:]
    (measured,) = runs_of(client, parents(client)[-1].info.run_id)  # measured, not taken from Mallory
    plant(client, parents(client)[-1], tags={"mlflow.user": "mallory"})  # her "latest sweep"
    done = run_cli("--tracking-uri", store, cwd=tmp_path, module="ecopipe.aggregate")
    assert done.returncode == 0 and f"the latest sweep {parents(client)[-2].info.run_id}" in done.stdout
    # A run of mine dated tomorrow would be every cell's latest: left out, and said.
    tomorrow = int((time.time() + 86400) * 1000)
    plant(client, measured, metrics=tiny(measured), start_ms=tomorrow)
    out = tmp_path / "tables"
    done = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), cwd=tmp_path,
                   module="ecopipe.aggregate")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "1 runs start more than 5 min in the future" in summary
    gross = pd.read_csv(out / "tables" / "energy_gross.csv")
    assert float(gross.iloc[0, -1]) > 1e-5  # joules: the measured millijoules, not the plant's nanojoules
    assert client.get_run(planted).info.status == "FINISHED"  # nothing of Mallory's was changed


def test_30_7_the_notes_name_whose_run_each_reused_cell_is(client, store, tmp_path):
    from tests.test_sweep import sweep

    assert sweep(tmp_path, store, "model=decision_tree").returncode == 0
    assert sweep(tmp_path, store, "model=decision_tree").returncode == 0
    notes = (tmp_path / "multirun" / "aggregate" / "summary.md").read_text()
    reused = r"1 reused, measured before this sweep: decision_tree\S* \(\w{32}, by \S+\)"
    assert re.search(reused, notes), notes
    runs = pd.read_csv(tmp_path / "multirun" / "aggregate" / "data" / "runs.csv")
    assert list(runs["user_id"]) == [current_user()]  # and the table says whose run the cell is


def test_30_8_a_quote_or_a_dollar_in_a_name_stops_nobody(store, client, tmp_path):
    from tests.test_sweep import sweep

    quoted = ["model=decision_tree", 'hardware.cpu_model="Joe\'s CPU"']
    assert sweep(tmp_path, store, *quoted).returncode == 0
    again = sweep(tmp_path, store, *quoted)  # the reuse search held the name: "Invalid clause(s)"
    assert again.returncode == 0 and "1 reused" in again.stdout, again.stderr[-2000:]
    dollars = "hardware.cpu_model='Evil $\\undefinedcmd{x}$ CPU'"
    math = run_cli(f"tracking.uri={store}", "model=decision_tree", dollars, *FAST, cwd=tmp_path)
    assert math.returncode == 0, math.stderr[-2000:]
    out = tmp_path / "tables"
    done = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), cwd=tmp_path,
                   module="ecopipe.aggregate")  # fmt: skip
    assert done.returncode == 0 and (out / "plots" / "ess.png").is_file(), done.stderr[-2000:]
    assert "Evil $\\undefinedcmd{x}$ CPU" in (out / "tables" / "energy_gross.csv").read_text()


def test_30_10_plots_stay_small_whatever_the_store_holds(make_cfg, client, store, tmp_path):
    run = client.get_run(run_job(make_cfg("model=decision_tree")).run_id)
    for model in range(10):  # 10 rows x 22 hardware names (150 names made a 990 x 69,872 px ESS plot)
        for machine in range(22):
            plant(
                client,
                run,
                tags={"ecopipe.model": f"model {model}", Tag.HARDWARE: f"machine {machine}"},
            )
    out = tmp_path / "tables"
    done = run_cli("--tracking-uri", store, "--experiment", "ecopipe", "--out", str(out), cwd=tmp_path,
                   module="ecopipe.aggregate")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    height, width = imread(out / "plots" / "ess.png").shape[:2]
    assert max(height, width) < 3000, (height, width)
    assert len(pd.read_csv(out / "tables" / "ess.csv").columns) > 22  # the table keeps every column


def test_30_9_the_reaper_ends_only_runs_whose_process_it_knows_is_gone(make_cfg, client, store, tmp_path):
    from ecopipe.config import TrackingConfig
    from ecopipe.tracking.liveness import process_tags
    from ecopipe.tracking.run import job_run

    run = client.get_run(run_job(make_cfg()).run_id)
    here = process_tags()
    two_days_ago = int((time.time() - 49 * 3600) * 1000)
    gone = {**here, Tag.PID: "999999999", Tag.PID_STARTED: "0"}  # no such pid here
    runs = {
        "another host's, two days long": plant(client, run, tags={"ecopipe.host": "elsewhere"},
                                               start_ms=two_days_ago, running=True),
        "a container's of the same name": plant(client, run, tags=gone | {"ecopipe.pid_namespace": "pid:[1]"},
                                                running=True),
        "this machine's, its pid gone": plant(client, run, tags=gone, running=True),
    }  # fmt: skip
    status = {}
    for args in ([], ["--reap-after-h", "24"]):
        done = run_cli("--tracking-uri", store, "--experiment", "ecopipe", *args, cwd=tmp_path,
                       module="ecopipe.aggregate")  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        status[tuple(args)] = {what: client.get_run(run_id).info.status for what, run_id in runs.items()}
    assert list(status[()].values()) == ["RUNNING", "RUNNING", "FAILED"]  # only the one seen to be gone
    assert status[("--reap-after-h", "24")]["another host's, two days long"] == "FAILED"  # the user's limit
    done = run_cli("--tracking-uri", store, "--reap-after-h", "-1", cwd=tmp_path, module="ecopipe.aggregate")
    assert done.returncode == 2 and "-1 is not a positive number of hours" in done.stderr
    # A run marked FAILED while its job was alive ends FINISHED, without the reaper's words.
    with job_run(TrackingConfig(uri=store), "alive", {}) as alive:
        alive.set_tags({"ecopipe.status": "killed", Tag.ERROR: "killed: process ended..."})
        alive.client.set_terminated(alive.run_id, status="FAILED")
    ended = client.get_run(alive.run_id)
    assert ended.info.status == "FINISHED" and Tag.STATUS not in ended.data.tags
    assert Tag.ERROR not in ended.data.tags
