"""Sweeps end to end through Hydra's real multirun: parent/child runs, failure isolation, resume,
killed jobs, launchers, and the aggregation written at the end."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import read_write
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ecopipe import slurm
from ecopipe.config import CONFIG_DIR, ConfigError, TrackingConfig
from ecopipe.job import run_job
from ecopipe.names import Tag
from ecopipe.sweep import _restrict_parallelism, sweep_size
from ecopipe.tracking.experiment import open_experiment
from ecopipe.tracking.liveness import reap_dead_runs
from ecopipe.tracking.run import PARENT_RUN_ENV, open_run
from ecopipe.tracking.store import sqlite_path
from tests.conftest import FAST, run_cli


def sweep(tmp_path: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "-m", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'multirun'}", *FAST, *args, cwd=tmp_path
    )


def runs_of(client: MlflowClient, parent_id: str):
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    return client.search_runs([experiment], f"tags.`ecopipe.sweep_id` = '{parent_id}'")


def parents(client: MlflowClient):
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    return client.search_runs([experiment], "tags.`ecopipe.kind` = 'sweep'", order_by=["start_time ASC"])


def assert_in_its_cell(table: pd.DataFrame, run, metric: str) -> None:
    """The run's figure, unchanged, in its own cell: its model and data set's row, its hardware's column."""
    tags = run.data.tags
    row = table[table["model"] == tags[Tag.MODEL]]
    if "dataset" in table:  # a column only where the sweep spans data sets
        row = row[row["dataset"] == tags[Tag.DATASET]]
    (cell,) = row[tags[Tag.HARDWARE]]
    assert cell == pytest.approx(run.data.metrics[metric], rel=1e-9), (run.info.run_id, metric)


def test_four_job_sweep_parent_children_and_aggregation(tmp_path, store, client):
    done = sweep(tmp_path, store, "model=logistic_regression,decision_tree", "dataset=digits,iris")
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = parents(client)
    assert parent.info.status == "FINISHED"
    children = runs_of(client, parent.info.run_id)
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags[Tag.PARENT_RUN] for r in children} == {parent.info.run_id}
    assert parent.data.metrics["jobs"] == 4 and parent.data.metrics["jobs_failed"] == 0
    assert "job 4 of 4" in done.stdout + done.stderr  # progress: which job of how many
    out = tmp_path / "multirun" / "aggregate"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"summary.md", "summary.html", "plots/ess.png", "tables/ess.csv", "data/runs.csv"} <= files
    # Every child's ESS is in its own cell of the ESS table: four rows, one per job.
    table = pd.read_csv(out / "tables" / "ess.csv")
    assert len(table) == 4
    for run in children:
        assert_in_its_cell(table, run, "ess")
    # The parent run holds the same files: its ESS table is the one written to the sweep's folder.
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "tables", "plots", "data"} <= artifacts
    logged = client.download_artifacts(parent.info.run_id, "tables/ess.csv", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_csv(logged), table)
    # The run list's Description column reads the parent's note's start: plain words, not Markdown.
    note = client.get_run(parent.info.run_id).data.tags[Tag.NOTE]
    assert note.splitlines()[0] == "sweep of 4 jobs: tables in its artifacts"
    # The sweep ends with its headline table (as summary.md has it) and the link to the saved view.
    summary = (out / "summary.md").read_text()
    title = "Energy per 1,000 inferences, gross [J]"
    energy = summary.split(f"## {title}\n\n")[1].split("\n\n")[0]
    assert f"{title}\n\n{energy}\n" in done.stdout and len(energy.splitlines()) == 2 + 4 + 1  # + sources
    experiment = parent.info.experiment_id
    assert done.stdout.strip().splitlines()[-1] == (
        f"  view        `mlflow ui --backend-store-uri {store}` (in a checkout: `make ui STORE=<its file>`), "
        f"then http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey=ecopipe-headline"
        "  (every run's headline figures)"
    )


def test_each_warning_is_said_once_per_sweep(tmp_path, store, client):
    done = sweep(tmp_path, store, "model=logistic_regression,decision_tree,random_forest")
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    # This machine has no RAPL: every job estimates its CPU energy, and the sweep says so once.
    assert output.count("CPU energy is an ESTIMATE") == 1
    assert output.count("RAM energy is an ESTIMATE") == 1
    assert "FutureWarning" not in output
    assert output.count("job 3 of 3") == 1  # no log line is printed twice
    assert len(runs_of(client, parents(client)[0].info.run_id)) == 3


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, store, client):
    # max_iter=-1 passes the schema (params are free-form) and fails inside the fit, after the run opened;
    # limit=0 is refused before it starts. Both are recorded FAILED; the third job finishes.
    done = sweep(tmp_path, store, "model.params.max_iter=200,-1", "dataset.limit=null,0")
    assert done.returncode == 3, done.stderr[-3000:]  # exit status = number of failed jobs
    (parent,) = parents(client)
    children = runs_of(client, parent.info.run_id)
    statuses = sorted(r.info.status for r in children)
    assert statuses == ["FAILED", "FAILED", "FAILED", "FINISHED"]
    errors = " ".join(r.data.tags.get(Tag.ERROR, "") for r in children)
    assert "max_iter" in errors and "dataset.limit=0" in errors
    failed_in_fit = next(r for r in children if "max_iter" in r.data.tags.get(Tag.ERROR, ""))
    assert failed_in_fit.data.params["model.params.max_iter"] == "-1"


def test_resumed_sweep_skips_finished_jobs(tmp_path, store, client):
    first = sweep(tmp_path, store, "model=logistic_regression,decision_tree")
    assert first.returncode == 0, first.stderr[-3000:]
    # The "interrupted" sweep ran two of three jobs; running the full sweep finishes the rest.
    second = sweep(tmp_path, store, "model=logistic_regression,decision_tree,ridge", "dataset=digits")
    assert second.returncode == 1  # ridge on classification data is refused: recorded, counted
    again = sweep(tmp_path, store, "model=logistic_regression,decision_tree")
    assert again.returncode == 0
    first_parent, second_parent, third_parent = parents(client)
    assert len(runs_of(client, second_parent.info.run_id)) == 1  # only the new job ran
    assert second_parent.data.metrics["jobs_reused"] == 2 and second_parent.data.metrics["jobs_skipped"] == 0
    assert runs_of(client, third_parent.info.run_id) == []
    rerun = sweep(tmp_path, store, "model=logistic_regression", "rerun=true")
    assert rerun.returncode == 0
    assert len(runs_of(client, parents(client)[-1].info.run_id)) == 1


def test_resumed_sweep_tables_list_every_job_and_which_were_reused(tmp_path, store, client, make_cfg):
    earlier = run_job(make_cfg("model=decision_tree")).run_id  # a grid point measured outside any sweep
    assert sweep(tmp_path, store, "model=logistic_regression").returncode == 0
    (first,) = runs_of(client, parents(client)[0].info.run_id)
    again = sweep(tmp_path, store, "model=logistic_regression,decision_tree")
    assert again.returncode == 0, again.stderr[-3000:]
    parent = parents(client)[-1]
    assert runs_of(client, parent.info.run_id) == []  # nothing re-measured
    assert parent.data.metrics["jobs_reused"] == 2 and parent.data.metrics["jobs"] == 0
    out = tmp_path / "multirun" / "aggregate"
    jobs = pd.read_csv(out / "data" / "runs.csv")
    assert set(jobs["run_id"]) == {earlier, first.info.run_id} and jobs["reused"].all()
    energy = pd.read_csv(out / "tables" / "energy_gross.csv")  # both grid points, not an empty table
    assert len(energy) == 2
    for run_id in (earlier, first.info.run_id):
        assert_in_its_cell(energy, client.get_run(run_id), "energy_per_1k_gross_j")
    summary = (out / "summary.md").read_text()
    assert "2 reused, measured before this sweep" in summary
    assert earlier in summary and first.info.run_id in summary
    assert "2 reused" in again.stdout + again.stderr


def test_killed_job_is_marked_failed(tmp_path, store, client):
    script = textwrap.dedent(f"""
        import os, signal
        from ecopipe.config import TrackingConfig
        from ecopipe.tracking.run import open_run
        run = open_run(TrackingConfig(uri={store!r}), "doomed", {{}})
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    run_id = done.stdout.strip()
    assert client.get_run(run_id).info.status == "RUNNING"
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    assert reap_dead_runs(client, experiment) == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "killed" in run.data.tags[Tag.ERROR]


@contextmanager
def another_job_tags_first(store: str, parent: str, array_id: str) -> Iterator[list[str]]:
    """Another array job winning the race for the parent's array tag: its own connection inserts the
    tag between MLflow's select and insert, so this process's insert breaks the unique key."""
    raced: list[str] = []

    def race(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT INTO tags") and slurm.ARRAY_TAG in str(parameters) and not raced:
            raced.append(statement)
            with closing(sqlite3.connect(sqlite_path(store))) as other, other:
                other.execute(
                    "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                    (slurm.ARRAY_TAG, array_id, parent),
                )

    event.listen(Engine, "before_cursor_execute", race)
    try:
        yield raced
    finally:
        event.remove(Engine, "before_cursor_execute", race)


def test_array_jobs_that_tag_the_sweep_at_once_both_go_on(store, client, monkeypatch):
    """Each job of a SLURM array sets the same array id on the sweep's parent run; two first writes at
    once collided on PostgreSQL (16 jobs) and the loser failed. It finds its own value and goes on; a
    different array id on the same sweep is a real conflict and still fails the job."""
    cfg = TrackingConfig(uri=store)
    _, experiment = open_experiment(cfg)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "13")

    def sweep_parent() -> str:
        parent = client.create_run(experiment).info.run_id
        monkeypatch.setenv(PARENT_RUN_ENV, parent)
        return parent

    parent = sweep_parent()
    with another_job_tags_first(store, parent, "13") as raced:
        child = open_run(cfg, "job", {})
    assert raced and client.get_run(parent).data.tags[slurm.ARRAY_TAG] == "13"
    assert client.get_run(child.run_id).data.tags[slurm.ARRAY_TAG] == "13"
    parent = sweep_parent()
    with (
        another_job_tags_first(store, parent, "14") as raced,
        pytest.raises(MlflowException, match="UNIQUE constraint failed"),
    ):
        open_run(cfg, "job", {})
    assert raced


def test_submitit_local_runs_a_two_job_sweep(tmp_path, store, client):
    done = sweep(tmp_path, store, "hydra/launcher=submitit_local", "model=logistic_regression,decision_tree")
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = parents(client)
    children = runs_of(client, parent.info.run_id)
    assert sorted(r.data.tags[Tag.MODEL] for r in children) == ["decision_tree", "logistic_regression"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags[Tag.PID] for r in children} | {parent.data.tags[Tag.PID]}) == 3


def _sweep_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_joblib_never_shares_a_measured_device(monkeypatch, caplog):
    """The guard's rules on every branch. Whether CUDA is available is faked (the rule's GPU exception):
    this machine has no GPU."""
    from ecopipe import sweep as sweep_module

    def n_jobs_after_guard(*overrides: str, cuda: bool) -> int:
        monkeypatch.setattr(sweep_module, "cuda_available", lambda: cuda)
        cfg = _sweep_config("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *overrides)
        _restrict_parallelism(cfg)
        return cfg.hydra.launcher.n_jobs

    assert n_jobs_after_guard(cuda=False) == 1  # CPU jobs side by side would mix their CPU energy
    assert n_jobs_after_guard("monitor.allow_shared_cpu=true", cuda=False) == 2
    # With a GPU, jobs would meter one device together: never, whatever allow_shared_cpu says.
    with caplog.at_level("WARNING"):
        assert n_jobs_after_guard("monitor.allow_shared_cpu=true", cuda=True) == 1
    assert "GPU jobs never share a device" in caplog.text
    # Jobs pinned to the CPU on a GPU machine follow the CPU rule.
    assert n_jobs_after_guard("hardware.device=cpu", "monitor.allow_shared_cpu=true", cuda=True) == 2
    assert n_jobs_after_guard("hardware.device=cpu", cuda=True) == 1


def test_slurm_jobs_get_their_node_unless_told_they_may_share(caplog):
    """--exclusive for GPU and CPU jobs alike (RAPL sees the whole node); a key turns it off, warned."""
    from ecopipe.slurm import SHARED_NODE_WARNING, restrict_sharing

    def exclusive(*overrides: str) -> bool:
        cfg = _sweep_config("hydra/launcher=slurm", *overrides)
        restrict_sharing(cfg)
        return bool((cfg.hydra.launcher.get("additional_parameters") or {}).get("exclusive"))

    assert exclusive("hardware.device=cuda")  # one GPU (the launcher's default), and the node to itself
    assert exclusive("hardware.device=cpu", "hydra.launcher.gpus_per_node=0")
    with caplog.at_level("WARNING"):
        assert not exclusive("hardware.device=cuda", "monitor.allow_shared_cpu=true")
    assert SHARED_NODE_WARNING in caplog.text and "RAPL counts every job" in SHARED_NODE_WARNING
    with pytest.raises(ConfigError, match="measures one GPU in one task"):
        exclusive("hydra.launcher.gpus_per_node=2")


def test_a_joblib_sweep_runs_one_job_at_a_time_unless_told_they_may_share(tmp_path, store, client):
    """The guard acts on the launcher Hydra builds: reduced to n_jobs=1, joblib runs the jobs one after
    the other in the sweep's own process; allowed to share the CPU, in worker processes beside it."""
    models = "model=logistic_regression,decision_tree"
    parallel = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    guarded = sweep(tmp_path, store, *parallel, models)
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    assert "hydra/launcher n_jobs=2 reduced to 1: CPU jobs side by side share" in guarded.stdout
    (tmp_path / "shared").mkdir()  # a sweep folder of its own, in the same store
    shared = sweep(tmp_path / "shared", store, *parallel, models, "monitor.allow_shared_cpu=true")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert "reduced to 1" not in shared.stdout and "2 jobs share the CPU" in shared.stdout
    one_by_one, side_by_side = parents(client)
    for parent, same_process in ((one_by_one, True), (side_by_side, False)):
        children = runs_of(client, parent.info.run_id)
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
        in_sweep_process = [r.data.tags[Tag.PID] == parent.data.tags[Tag.PID] for r in children]
        assert in_sweep_process == [same_process] * 2


def test_sweep_size_counts_the_grid():
    cfg = _sweep_config()
    with read_write(cfg):
        cfg.hydra.overrides.task = ["model=logistic_regression,svc,ridge", "precision=fp32,fp16", "seed=3"]
    assert sweep_size(cfg) == 6
    quick = _sweep_config("+experiment=quick")
    assert sweep_size(quick) == 4 * 2 * 2


def test_grid_skips_model_dataset_pairs_that_do_not_fit(tmp_path, store, client):
    done = sweep(
        tmp_path, store, "model=logistic_regression,ridge", "dataset=digits,diabetes", "skip_mismatched=true"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = parents(client)
    pairs = sorted(
        (r.data.tags[Tag.MODEL], r.data.tags[Tag.DATASET]) for r in runs_of(client, parent.info.run_id)
    )
    assert pairs == [("logistic_regression", "digits"), ("ridge", "diabetes")]
    assert parent.data.metrics["jobs_skipped"] == 2 and parent.data.metrics["jobs_failed"] == 0


def test_no_artifact_or_param_holds_the_stores_absolute_path(tmp_path, store, client):
    """Results are copied off the machine (a paper's supplement, a shared server): they name the store
    by its file's name, never by this machine's path; the tables folder says the same."""
    done = sweep(tmp_path, store, "model=logistic_regression,decision_tree")
    assert done.returncode == 0, done.stderr[-3000:]
    path = str(sqlite_path(store))
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    runs = client.search_runs([experiment])
    assert len(runs) == 3
    holding = []
    for run in runs:
        folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, run.info.run_name
        holding += [str(p) for p in files if path.encode() in p.read_bytes()]
        holding += [f"param {k}" for k, v in run.data.params.items() if path in v]
        if Tag.KIND not in run.data.tags:
            assert run.data.params["tracking.uri"] == "sqlite:///…/mlflow.db (a local file)"
    holding += [str(p) for p in (tmp_path / "multirun" / "aggregate").rglob("*") if p.is_file()
                and path.encode() in p.read_bytes()]  # fmt: skip
    assert holding == []
