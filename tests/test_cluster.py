"""Sweeps on a real one-node SLURM cluster into an MLflow server (basic-auth) on PostgreSQL.

Nothing is mocked: `make test-cluster` runs cluster/up.sh (munge, slurmdbd on MariaDB, slurmctld,
slurmd, PostgreSQL, `mlflow server --app-name basic-auth`), these tests, then cluster/down.sh. Each
test sweeps with `hydra/launcher=slurm tracking=server` into an experiment of its own, and checks the
store against SLURM's own accounting (sacct). Without the cluster (plain `make test`) they are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ecopipe.aggregate import aggregate
from ecopipe.credentials import redact
from ecopipe.names import Tag
from ecopipe.tracking.run import JobRun
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_ENV = Path(os.environ.get("ECOPIPE_CLUSTER_DIR", ROOT / ".cluster")) / "cluster.env"


def _cluster() -> dict[str, str] | None:
    """The variables of .cluster/cluster.env, if the cluster it describes answers."""
    if not CLUSTER_ENV.is_file() or shutil.which("sinfo") is None:
        return None
    env = dict(re.findall(r"^export (\w+)=(.*)$", CLUSTER_ENV.read_text(), re.MULTILINE))
    up = subprocess.run(["sinfo", "-h"], env=os.environ | env, capture_output=True, timeout=30)
    return env if up.returncode == 0 else None


CLUSTER = _cluster()
skip_without_cluster = pytest.mark.skipif(
    CLUSTER is None,
    reason="needs the local SLURM cluster and MLflow server: `make test-cluster` starts them (cluster/up.sh)",
)


def needs_cluster(test):
    # A sweep of SLURM jobs takes minutes on a busy 2-core machine: more than the suite's 600 s default.
    return pytest.mark.timeout(1200)(pytest.mark.cluster(skip_without_cluster(test)))


SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "tracking=server",
]


@pytest.fixture
def server(monkeypatch) -> str:
    """The cluster's tracking URI, with this process holding the jobs' credentials (from the environment)."""
    assert CLUSTER is not None
    for key, value in CLUSTER.items():
        monkeypatch.setenv(key, value)
    return CLUSTER["MLFLOW_TRACKING_URI"]


@pytest.fixture
def experiment(request) -> str:
    return f"cluster-{request.node.name}-{uuid.uuid4().hex[:8]}"


def slurm_sweep(
    tmp_path: Path, experiment: str, *args: str, partition: str = "debug", wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "ecopipe",
        "-m",
        *SLURM,
        f"hydra.launcher.partition={partition}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *FAST,
        *args,
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(command, cwd=tmp_path, env=env, text=True)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def sweeps(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([exp], "tags.`ecopipe.kind` = 'sweep'", order_by=["start_time ASC"])


def jobs_of(client: MlflowClient, experiment: str, parent_id: str | None = None):
    exp = client.get_experiment_by_name(experiment).experiment_id
    where = f"tags.`ecopipe.sweep_id` = '{parent_id}'" if parent_id else ""
    runs = client.search_runs([exp], where, max_results=1000)
    return runs if parent_id else [r for r in runs if r.data.tags.get(Tag.KIND) != "sweep"]


def sacct(array_id: str) -> pd.DataFrame:
    """SLURM's accounting of one array: job id, state, start and end (epoch seconds)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "JobIDRaw,State,Start,End"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"SLURM_TIME_FORMAT": "%s"},
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    frame = pd.DataFrame(rows, columns=["job_id", "state", "start", "end"])
    frame[["start", "end"]] = frame[["start", "end"]].astype("int64")
    return frame.sort_values("start", ignore_index=True)


def most_at_once(acct: pd.DataFrame) -> int:
    events = sorted([(s, 1) for s in acct["start"]] + [(e, -1) for e in acct["end"]])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def squeue_empty(array_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", array_id], capture_output=True, text=True).stdout
    return not out.strip()


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_redact_hides_uri_passwords_only():
    assert redact("postgresql://mlflow:s3cr%2Ft@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert (
        redact("tracking.uri=http://me:pw@host:5000 seed=1") == "tracking.uri=http://me:***@host:5000 seed=1"
    )
    assert redact("http://host:5000 sqlite:////tmp/a:b.db") == "http://host:5000 sqlite:////tmp/a:b.db"


@needs_cluster
def test_slurm_sweep_into_the_postgresql_server(tmp_path, server, experiment):
    done = slurm_sweep(tmp_path, experiment, "model=logistic_regression,decision_tree", "dataset=digits,wine")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Bypassing sacct error" not in done.stderr  # accounting answers: submitit polls quietly
    client = MlflowClient(server)
    (parent,) = sweeps(client, experiment)
    children = jobs_of(client, experiment, parent.info.run_id)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags[Tag.PARENT_RUN] for r in children} == {parent.info.run_id}
    array = parent.data.tags[Tag.SLURM_ARRAY_JOB_ID]
    assert {r.data.tags[Tag.SLURM_ARRAY_JOB_ID] for r in children} == {array}
    # SLURM's accounting agrees: four jobs COMPLETED, the ones the runs name, one at a time (--exclusive).
    acct = sacct(array)
    assert set(acct["state"]) == {"COMPLETED"}
    assert sorted(acct["job_id"]) == sorted(r.data.tags[Tag.SLURM_JOB_ID] for r in children)
    assert most_at_once(acct) == 1
    # The sweep's tables were built from the server; the direct PostgreSQL reader reads what search_runs does.
    assert list((tmp_path / "multirun" / "aggregate").rglob("*.csv"))
    direct = aggregate(
        server, experiment, sweep_id=parent.info.run_id, store_uri=CLUSTER["ECOPIPE_STORE_URI"]
    )
    searched = aggregate(server, experiment, sweep_id=parent.info.run_id, reader="search")
    assert len(direct.runs) == 4
    pd.testing.assert_frame_equal(direct.runs, searched.runs)
    # Credentials came from the environment and were logged nowhere.
    secrets = [CLUSTER["MLFLOW_TRACKING_PASSWORD"], *(Path(CLUSTER["PGPASSFILE"]).read_text().split())]
    secrets = [line.rsplit(":", 1)[-1] for line in secrets]
    for run in [parent, *children]:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not any(secret in recorded for secret in secrets)
    config_text = Path(
        client.download_artifacts(children[0].info.run_id, "config.yaml", str(tmp_path))
    ).read_text()
    assert not any(secret in config_text for secret in secrets)


@needs_cluster
def test_failing_job_on_a_node_is_recorded_and_counted(tmp_path, server, experiment):
    done = slurm_sweep(tmp_path, experiment, "model.params.max_iter=200,-1")
    assert done.returncode == 1, done.stderr[-4000:]  # the exit status counts the failed job
    client = MlflowClient(server)
    (parent,) = sweeps(client, experiment)
    children = jobs_of(client, experiment, parent.info.run_id)
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED"]
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "max_iter" in failed.data.tags[Tag.ERROR]
    assert failed.data.tags[Tag.SLURM_JOB_ID] in set(
        sacct(parent.data.tags[Tag.SLURM_ARRAY_JOB_ID])["job_id"]
    )
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1


@needs_cluster
def test_resume_after_scancel(tmp_path, server, experiment):
    # Windows long enough that the job outlives KillWait (5 s) after scancel's SIGTERM (submitit ignores it).
    grid = ("model=logistic_regression,decision_tree,svc", "dataset=wine", "monitor.min_window_s=5")
    client = MlflowClient(server)
    first = slurm_sweep(tmp_path, experiment, *grid, wait=False)
    try:
        victim = wait_until(
            lambda: (
                next((r for r in jobs_of(client, experiment) if r.info.status == "RUNNING"), None)
                if client.get_experiment_by_name(experiment)
                else None
            ),
            300,
            "a running job",
        )
        tags = victim.data.tags  # SLURM 22.05 cancels an array's task by its array_task name only
        subprocess.run(["scancel", f"{tags[Tag.SLURM_ARRAY_JOB_ID]}_{tags[Tag.SLURM_ARRAY_TASK_ID]}"])
        first.wait(timeout=600)
    finally:
        first.kill()
    array = victim.data.tags[Tag.SLURM_ARRAY_JOB_ID]
    wait_until(lambda: squeue_empty(array), 300, f"SLURM array {array} to end")
    assert sacct(array)["state"].str.startswith("CANCELLED").sum() == 1  # "CANCELLED by 0"

    second = slurm_sweep(tmp_path, experiment, *grid)
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = sweeps(client, experiment)[-1]
    (again,) = jobs_of(client, experiment, resumed.info.run_id)  # only the cancelled job ran again
    assert again.data.tags[Tag.CONFIG_HASH] == victim.data.tags[Tag.CONFIG_HASH]
    assert again.info.status == "FINISHED" and resumed.data.metrics["jobs_reused"] == 2
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(victim.info.run_id).info.status in ("FAILED", "KILLED")
    finished = {
        r.data.tags[Tag.CONFIG_HASH] for r in jobs_of(client, experiment) if r.info.status == "FINISHED"
    }
    assert len(finished) == 3


@needs_cluster
def test_sixteen_concurrent_jobs_lose_no_run(tmp_path, server, experiment):
    done = slurm_sweep(
        tmp_path, experiment, "seed=range(16)", "monitor.allow_shared_cpu=true", partition="shared"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(server)
    (parent,) = sweeps(client, experiment)
    children = jobs_of(client, experiment, parent.info.run_id)
    assert len(children) == 16 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(int(r.data.params["seed"]) for r in children) == list(range(16))
    acct = sacct(parent.data.tags[Tag.SLURM_ARRAY_JOB_ID])
    assert len(acct) == 16 and set(acct["state"]) == {"COMPLETED"}
    assert most_at_once(acct) > 2  # more jobs at once than the node has cores: they did overlap


def log_digits(server: str, run_id: str, together: threading.Barrier) -> None:
    together.wait()
    JobRun(MlflowClient(server), run_id).log_dataset("digits", "sklearn, split test", {"n": 1})


@needs_cluster
def test_jobs_that_log_one_new_data_set_at_once_all_link_it(server, experiment):
    # The store adds a data set new to the experiment by select, then insert: jobs that log it at the
    # same moment collide on its unique key: before the fix, 32 writers at once collided in 3 rounds
    # of 5 here (a sweep of 16 jobs lost 3 in CI). Each round is a fresh experiment, where the data
    # set is new again.
    client = MlflowClient(server)
    for round_ in range(4):
        experiment_id = client.create_experiment(f"{experiment}-{round_}")
        runs = [client.create_run(experiment_id).info.run_id for _ in range(32)]
        together = threading.Barrier(len(runs))
        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(log_digits, [server] * len(runs), runs, [together] * len(runs)))  # raises any error
        linked = [run.inputs.dataset_inputs for run in client.search_runs([experiment_id], "")]
        assert len(linked) == len(runs)
        assert all(len(inputs) == 1 and inputs[0].dataset.name == "digits" for inputs in linked)


@needs_cluster
def test_the_basic_auth_server_refuses_missing_or_wrong_credentials_in_one_line(
    tmp_path, server, monkeypatch
):
    # The server answers (it is there) but refuses: the job says so before any work, not in a traceback.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    for password, needle in (
        (None, "asks for credentials and none were sent (HTTP 401"),
        ("wrong", "refused the credentials"),
    ):
        if password:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", CLUSTER["MLFLOW_TRACKING_USERNAME"])
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        else:
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        done = subprocess.run(
            [sys.executable, "-m", "ecopipe", "tracking=server", f"tracking.uri={server}", *FAST],
            cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 2 and needle in done.stderr, done.stderr[-3000:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@needs_cluster
def test_30_a_postgresql_password_in_the_uri_is_written_nowhere(tmp_path, server, experiment, monkeypatch):
    # The bench role owns a scratch store; only the URI carries its password (no .pgpass, no PGPASSWORD).
    secret = (CLUSTER_ENV.parent / "secrets" / "postgres-ecopipe_bench").read_text().strip()
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    store = CLUSTER["ECOPIPE_BENCH_STORE_URI"]
    user, host = store.removeprefix("postgresql://").split("@", 1)
    common = [
        f"tracking.experiment={experiment}",
        f"tracking.artifact_location={(tmp_path / 'art').as_uri()}",
    ]
    outputs = []
    credentialed = f"tracking.uri=postgresql://{user}:{secret}@{host}"
    job = subprocess.run(
        [sys.executable, "-m", "ecopipe", credentialed, *common, *FAST],
        cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    outputs.append(job.stdout + job.stderr)
    sweep = slurm_sweep(
        tmp_path, experiment, f'tracking.uri="{store}?password={secret}"', *common[1:], "seed=1,2"
    )
    assert sweep.returncode == 0, sweep.stderr[-4000:]
    outputs.append(sweep.stdout + sweep.stderr)
    assert not [o for o in outputs if secret in o]
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []  # Hydra's files, submitit's pickles and logs, the tables, every artifact
    monkeypatch.setenv("PGPASSWORD", secret)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # a job; a sweep of two
    stored = [v for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not [v for v in stored if secret in v]
