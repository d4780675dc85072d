"""MLflow: one run per job, in the embedded SQLite store by default or a tracking server.

The client API (not the fluent one) is used throughout so that a sweep's parent run and its jobs,
possibly in other processes, never depend on a process-global "active run".
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import psutil
import requests
from filelock import FileLock
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request
from omegaconf import DictConfig, OmegaConf, open_dict
from sqlalchemy.engine import make_url

from ecopipe import slurm
from ecopipe.config import ConfigError, TrackingConfig
from ecopipe.credentials import check_secret_characters, redact
from ecopipe.names import KILLED, SWEEP_KIND, MetricFamily, Tag, TagFamily
from ecopipe.stops import Stopped, stops_deferred
from ecopipe.ui_view import seed_view, view_path

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
PARENT_RUN_ENV = "ECOPIPE_PARENT_RUN_ID"
_BATCH = 500  # MLflow accepts up to 1,000 metrics per batch call and 100 params


# Stores ecopipe can write to; `postgresql+psycopg2://` and the like name the driver after the `+`.
SUPPORTED_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql")
REACHABLE_TIMEOUT_S = 3.0


def resolve_uri(cfg: TrackingConfig) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else SQLite in the working directory."""
    if cfg.uri:
        return cfg.uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of an embedded store (sqlite:///relative or sqlite:////absolute); None for any
    other store, and for an in-memory one."""
    if not uri.startswith("sqlite:"):
        return None
    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


LOCAL_FILE = " (a local file)"


def shown_uri(uri: str, parts: int = 1) -> str:
    """A store's URI as artifacts and reports write it: credentials redacted, and a local file by its
    last `parts` path components alone, since a result copied off a machine should not carry that
    machine's paths."""
    path = sqlite_path(uri)
    if path is None:
        return redact(uri)
    if uri.endswith(LOCAL_FILE):  # shown already (a job's recorded tracking.uri)
        return uri
    return f"sqlite:///…/{'/'.join(path.parts[-parts:])}{LOCAL_FILE}"


def recorded_config(raw: DictConfig) -> DictConfig:
    """The job's config as its params and config.yaml record it: the store's URI as shown_uri."""
    recorded = raw.copy()
    with open_dict(recorded):
        recorded.tracking.uri = shown_uri(resolve_uri(OmegaConf.to_object(raw.tracking)))
    return recorded


def check_writable_folder(folder: Path, what: str) -> None:
    """Refuse a folder that cannot be created or written, in one line (a file is made and removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"{what}: the folder {folder} cannot be written ({reason}).") from None


def store_writable(uri: str) -> bool:
    """Whether this process may write the store: false for a SQLite file on a read-only medium or
    without write permission (an archived store); a server or database is taken as writable."""
    path = sqlite_path(uri)
    return path is None or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def _check_sqlite_opens(uri: str, path: Path) -> None:
    """A SQLite file whose header and schema can be read (read-only, so nothing is created or locked):
    a corrupt or truncated store is refused in one line before the model is built."""
    shown = redact(uri)
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise ConfigError(
            f"tracking.uri={shown}: {path} cannot be read as a database ({error}): restore it from a copy, "
            "or name another file."
        ) from None


def check_tracking_uri(uri: str, read_only: bool = False) -> None:
    """Refuse a tracking store that cannot work, before anything loads: an unknown scheme, a SQLite
    folder that cannot be written, a server that does not answer within a few seconds. `read_only`
    (a reader: the aggregation) asks only that an existing SQLite file can be read."""
    shown = redact(uri)
    check_secret_characters(uri)  # else the messages below could not mask it
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            f"tracking.uri={shown} is not supported: use sqlite:///PATH (an embedded store), "
            "http(s)://HOST:PORT (an MLflow tracking server), postgresql://... or mysql://... (a database "
            "MLflow manages)."
        )
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise ConfigError(
                f"tracking.uri={shown}: a SQLite store is written sqlite:///PATH, three slashes."
            )
        path = sqlite_path(uri)
        if path is None:  # sqlite:///:memory: or no file at all: the runs would die with the process
            raise ConfigError(
                f"tracking.uri={shown}: an in-memory store loses every run when the process ends; name a "
                "file, sqlite:///PATH."
            )
        if read_only:
            if path.is_file():  # a missing file is the reader's own one-line error
                _check_sqlite_opens(uri, path)
            return
        check_writable_folder(path.parent.resolve(), f"tracking.uri={shown}")
        if path.exists() and not (path.is_file() and os.access(path, os.R_OK | os.W_OK)):
            raise ConfigError(f"tracking.uri={shown}: {path} is not a database file this user can write.")
        if path.exists():
            _check_sqlite_opens(uri, path)
        return
    try:
        parsed = urlparse(uri)
        parsed.port  # noqa: B018 (parsing the port is the check)
    except ValueError as error:  # a malformed host or port (`http://[::1`)
        raise ConfigError(f"tracking.uri={shown} is not a valid URI: {error}.") from None
    if scheme in ("http", "https"):
        _check_mlflow_server(uri)
        return
    port = parsed.port or {"postgresql": 5432, "mysql": 3306}[scheme]
    try:
        socket.create_connection((parsed.hostname or "localhost", port), REACHABLE_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(
            f"tracking.uri={shown}: the database at {parsed.hostname}:{port} did not answer within "
            f"{REACHABLE_TIMEOUT_S:g} s ({error.strerror or error})."
        ) from None


def _check_mlflow_server(uri: str) -> None:
    """The server answers, is an MLflow tracking server, and takes this process's credentials: one
    read with what the client will send (MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN, TLS settings)."""
    shown = redact(uri)
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "GET",
            # A busy server (sixteen jobs starting at once) is not a missing one: two retries, 1 then 2 s
            # apart, and 30 s for the answer once connected (checking a password is slow).
            max_retries=2,
            backoff_factor=1,
            timeout=(REACHABLE_TIMEOUT_S, 30),
            raise_on_status=False,
            params={"max_results": 1},
        )
    except (requests.RequestException, MlflowException) as error:
        cause = error.__cause__ or error.__context__ or error  # MLflow wraps the connection's error
        raise ConfigError(
            f"tracking.uri={shown}: no tracking server answered (3 tries, {REACHABLE_TIMEOUT_S:g} s each) "
            f"({type(cause).__name__}); start it or check the address."
        ) from None
    status = f"HTTP {response.status_code} {response.reason}"
    if response.status_code in (401, 403):
        refused = (
            "refused the credentials sent"
            if response.request.headers.get("Authorization")
            else "asks for credentials and none were sent"
        )
        raise ConfigError(
            f"tracking.uri={shown}: the tracking server {refused} ({status}); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an "
            "account that may read and write runs."
        )
    try:
        mlflow_answer = response.ok and isinstance(response.json(), dict)
    except ValueError:  # not JSON: a web page
        mlflow_answer = False
    if not mlflow_answer:
        raise ConfigError(
            f"tracking.uri={shown} answers, but not as an MLflow tracking server ({status} to "
            "/api/2.0/mlflow/experiments/search); check the host, port and path."
        )


@contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Jobs starting together on a new SQLite store would race in MLflow's schema creation (tables
    half made, `_alembic_tmp_*` already there): a lock file beside the database lets one create it."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with FileLock(f"{path}.lock"):
        yield


def artifact_location(uri: str, experiment: str, configured: str | None) -> str | None:
    """Where a new experiment's artifacts go; None: the tracking server decides.

    An embedded store keeps them beside its database, not in whatever directory a job runs. A database
    store has no place of its own: MLflow would use ./mlruns of whichever process creates the
    experiment, which the other jobs cannot reach, so `tracking.artifact_location` must name one.
    """
    if configured:
        return configured
    path = sqlite_path(uri)
    if path is not None:
        return (path.parent / "mlartifacts" / experiment).resolve().as_uri()
    if uri.split(":", 1)[0].split("+", 1)[0].lower() in ("postgresql", "mysql"):
        raise ConfigError(
            f"tracking.uri={redact(uri)} is a database without a tracking server: its runs' artifacts would "
            "go to ./mlruns of whichever process creates the experiment. Set tracking.artifact_location to "
            "a folder every job can reach (file:///shared/mlartifacts) or an object store (s3://bucket/path)."
        )
    return None


# The MLflow UI reads these experiment tags: its description (Tag.NOTE), and which page an experiment
# opens on (without a kind, MLflow 3 may open an experiment on its GenAI traces page, empty here).
KIND = "custom_model_development"


_OLD_NOTE_START = "**ecopipe**: what ML inference costs the planet."  # the note before the view's link


def experiment_description(experiment_id: str) -> str:
    return f"""\
**[Open the headline view]({view_path(experiment_id)})**: energy and CO2e per 1,000 inferences, ESS,
hardware and whether each figure is *measured* or an *ESTIMATE*, one row per run (MLflow does not
apply a saved view by itself: this link, or the views menu, opens it).

**ecopipe**: what ML inference costs the planet. One run per job (model x dataset x precision x
hardware, batch size, region); a sweep is a parent run whose children are its jobs, and whose
artifacts hold the comparison tables (`summary.md`, `tables/`, `plots/`, `data/`).

- Open a run: its description is the job's summary (energy, CO2e, water, ESS, throughput, quality,
  hardware, and each energy source, *measured* or *ESTIMATE*), every figure with its band.
- The `headline/` metrics carry their unit in their name (per 1,000 inferences: energy in J, CO2e in
  mg, water in mL), each energy-derived one with its band in `_low` / `_high`; the tag
  `{Tag.FIGURES}` says what the figures are (*measured*, *ESTIMATE* or *SIMULATED*).
- ESS is effective parameters (millions) per g CO2e: it rewards size. Compare it only between runs
  of one task and data set.
- The System metrics tab of a run plots its power (an estimate, named so, where the machine has no
  counter) and utilisation trace.
"""


def ensure_experiment(client: MlflowClient, uri: str, name: str, artifacts: str | None = None) -> str:
    """Create the store's schema and the experiment once, with its description and the saved view of
    its headline columns; return its id."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_location(uri, name, artifacts), tags={Tag.EXPERIMENT_KIND: KIND}
        )
        client.set_experiment_tag(experiment_id, Tag.NOTE, experiment_description(experiment_id))
        seed_view(client, experiment_id, {})
        return experiment_id
    if artifacts and experiment.artifact_location.rstrip("/") != artifacts.rstrip("/"):
        log.warning(
            "tracking.artifact_location=%s, but experiment %r keeps its artifacts in %s (set when it was "
            "created; MLflow cannot move them)", artifacts, name, experiment.artifact_location,
        )  # fmt: skip
    described = {Tag.EXPERIMENT_KIND: KIND, Tag.NOTE: experiment_description(experiment.experiment_id)}
    for key, value in described.items():
        # Missing (an experiment made by an older ecopipe), or ecopipe's own older note: written anew;
        # a user's own note stays.
        if key not in experiment.tags or experiment.tags[key].startswith(_OLD_NOTE_START):
            client.set_experiment_tag(experiment.experiment_id, key, value)
    seed_view(client, experiment.experiment_id, experiment.tags)
    return experiment.experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StopSafeClient(MlflowClient):
    """An MlflowClient whose calls a stop signal cannot cut in half: it is raised when the call ends."""

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def whole(*args: Any, **kwargs: Any) -> Any:
            with stops_deferred():
                return attribute(*args, **kwargs)

        return whole


def open_experiment(cfg: TrackingConfig) -> tuple[MlflowClient, str]:
    """A client on the configured store and the id of its experiment, created on first use."""
    uri = resolve_uri(cfg)
    with _schema_lock(uri):  # creating the client creates the schema; get-or-create the experiment too
        with stops_deferred():  # creating the client may create the schema
            client = StopSafeClient(tracking_uri=uri)
        return client, ensure_experiment(client, uri, cfg.experiment, cfg.artifact_location)


SEARCH_PAGE = 1000  # runs per search_runs call: a tracking server caps a page; SQL stores accept more


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    """Every run a search matches, page by page (one call with a large max_results stops silently at
    it). A list, not a generator: a caller that changes runs while paging would shift the pages."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_run_with_hash(client: MlflowClient, experiment: str, digest: str, hardware: str) -> Run | None:
    """A FINISHED job run with this config hash on this hardware that this reader can vouch for, if
    any: the job is done. One this code version measured comes first.

    The hardware is part of the key: the same sweep run by a second machine against a shared store
    measures its own column instead of skipping everything. Anyone who may write to the experiment
    could plant a run with the same hash, so only this user's runs, started no later than now, count.
    The hash is hexadecimal and the hardware name is compared here, so no value is formatted into the
    search (a name with a quote broke it).
    """
    assert re.fullmatch(r"[0-9a-f]+", digest), digest
    candidates = search_all(  # every page: runs planted by the thousand must not push this user's out
        client, [experiment], f"tags.`{Tag.CONFIG_HASH}` = '{digest}' and attributes.status = 'FINISHED'"
    )
    candidates.sort(key=lambda run: run.info.start_time or 0, reverse=True)
    mine = [r for r in candidates if r.data.tags.get(Tag.HARDWARE_DETECTED) == hardware and vouched(r)]
    same_code = [r for r in mine if measured_by(r) == code_version()]
    return (same_code or mine or [None])[0]


def current_user() -> str:
    """The OS user, as MLflow's own clients name a run's user (tag mlflow.user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid): MLflow says "unknown" too
        return "unknown"


FUTURE_SKEW_S = 300.0  # how far a cluster machine's clock may run ahead of this one's


def vouched(run: Run) -> bool:
    """A run this reader can vouch for: logged by this user, started no later than now."""
    started_s = (run.info.start_time or 0) / 1000
    return run.info.user_id == current_user() and started_s <= time.time() + FUTURE_SKEW_S


def link_reused_run(client: MlflowClient, run: Run, name: str) -> None:
    """A sweep job skipped as already measured: list its earlier run on the sweep's parent run, so the
    sweep's tables hold every point of its grid and say which were reused, and by which code."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        client.set_tag(parent, TagFamily.REUSED.of(run.info.run_id), name)
        if measured_by(run) != code_version():
            client.set_tag(parent, TagFamily.REUSED_OTHER_CODE.of(run.info.run_id), measured_by(run))


def reused_runs(client: MlflowClient, parent_id: str) -> dict[str, str]:
    """The earlier runs a sweep reused: run id -> job name."""
    return _tagged(client.get_run(parent_id).data.tags, TagFamily.REUSED)


def reused_from_other_code(client: MlflowClient, parent_id: str) -> dict[str, str]:
    """The reused runs another code version measured: run id -> that version."""
    return _tagged(client.get_run(parent_id).data.tags, TagFamily.REUSED_OTHER_CODE)


def _tagged(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def process_tags() -> dict[str, str]:
    me = psutil.Process()
    return {
        Tag.USER: current_user(),
        Tag.HOST: socket.gethostname(),
        Tag.PID: str(me.pid),
        Tag.PID_STARTED: f"{me.create_time():.3f}",
        **_process_space(),
    }


@functools.cache  # read once per process: the reaper asks for it once per RUNNING run
def _process_space() -> dict[str, str]:
    """Where a pid means this process: the machine's boot and the pid namespace (containers on one
    host share its boot but not its pids, and may share its host name)."""
    space = {}
    with contextlib.suppress(OSError):
        space[Tag.BOOT_ID] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        space[Tag.PID_NAMESPACE] = os.readlink("/proc/self/ns/pid")
    return space


def _process_alive(tags: Mapping[str, str]) -> bool:
    try:
        process = psutil.Process(int(tags[Tag.PID]))
        same = abs(process.create_time() - float(tags[Tag.PID_STARTED])) < 1e-2  # not a reused pid
        return same and process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped by its parent
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return False


def running_jobs_of_sweep(client: MlflowClient, parent_id: str) -> list[Run]:
    """The sweep's job runs still RUNNING."""
    experiment = client.get_run(parent_id).info.experiment_id
    return search_all(
        client, [experiment], f"tags.`{Tag.SWEEP_ID}` = '{parent_id}' and attributes.status = 'RUNNING'"
    )


def _visible_from_here(tags: Mapping[str, str]) -> bool:
    """Whether a run's pid can be looked up here: same host name, boot and pid namespace (a run that
    recorded no boot or namespace, from an older ecopipe, cannot be judged)."""
    here = _process_space()
    return (
        tags.get(Tag.HOST) == socket.gethostname()
        and bool(here)
        and all(tags.get(key) == value for key, value in here.items())
    )


def gone_from_this_host(tags: Mapping[str, str]) -> bool:
    """Whether a run's process ran here and has ended (another machine's process cannot be seen)."""
    return _visible_from_here(tags) and not _process_alive(tags)


def reap_dead_runs(client: MlflowClient, experiment: str, foreign_after_h: float | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs whose process is known to be gone (SIGKILL, out of memory).

    A run of a SLURM job of this machine's cluster is dead once SLURM no longer runs the job; else a run
    whose pid can be looked up here (same host, boot and pid namespace) is dead when that pid, started
    when it was, is gone. Any other run (another machine's, a container's) is left RUNNING, unless it
    started more than `foreign_after_h` hours ago (a limit the user sets: a long job may run for days).
    """
    now = time.time()
    reaped = []
    for run in search_all(client, [experiment], "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(Tag.KIND) == SWEEP_KIND and _process_alive(tags):
            continue
        ended = slurm.job_ended(tags)  # SLURM knows about its jobs on every node
        if ended is not None:
            dead = ended
        elif _visible_from_here(tags):
            dead = not _process_alive(tags)
        else:
            dead = foreign_after_h is not None and now - run.info.start_time / 1000 > foreign_after_h * 3600
        if dead:
            where = f"process {tags.get(Tag.PID)} on {tags.get(Tag.HOST)}"
            if ended:
                where += f" (SLURM job {tags[slurm.JOB_TAGS['SLURM_JOB_ID']]}, no longer running)"
            elif not _visible_from_here(tags):
                where += f" (not seen from here; started over {foreign_after_h:g} h ago)"
            reason = f"{where} ended without closing its run"
            end_run(
                client, run.info.run_id, f"killed: {reason} (SIGKILL or out of memory?)", "FAILED", KILLED
            )
            reaped.append(run.info.run_id)
            log.warning("run %s marked FAILED: %s", run.info.run_id, reason)
    return reaped


# Top-level keys that do not change a result: where runs are logged, and how a sweep treats earlier runs.
NOT_A_RESULT_KEYS = ("tracking", "hydra", "rerun", "rerun_other_version", "skip_mismatched")
# Keys whose runs are repeats of one config: they share a table cell and a run name, and their spread
# is the between-run spread (the aggregation's tables, `repeat_hash`).
REPEAT_KEYS = ("seed",)


def config_hash(cfg: DictConfig, leave_out: tuple[str, ...] = ()) -> str:
    """Stable hash of the resolved job config; keys that do not change a result (tracking, sweep
    behaviour) are left out, and the top-level keys in `leave_out`."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(resolved, dict)
    resolved = {k: v for k, v in resolved.items() if k not in (*NOT_A_RESULT_KEYS, *leave_out)}
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def repeat_hash(cfg: DictConfig) -> str:
    """The same hash without the repeat keys: equal for the seeds of one config, different otherwise."""
    return config_hash(cfg, REPEAT_KEYS)


@functools.cache
def code_version() -> str:
    """The code that measures: the git commit of ecopipe's checkout, with a digest of its uncommitted
    changes to the code and configs when there are any (`<commit>+<digest>`); outside a checkout, the
    installed package's version."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        changes = subprocess.run(
            ["git", "diff", "HEAD", "--", ":/ecopipe", ":/conf", ":/pyproject.toml"],
            cwd=here, capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    if commit is None or commit.returncode != 0 or not commit.stdout.strip():
        return f"ecopipe {importlib.metadata.version('ecopipe')}"
    dirty = f"+{hashlib.sha256(changes.stdout).hexdigest()[:8]}" if changes.stdout else ""
    return commit.stdout.strip()[:12] + dirty


def measured_by(run: Run) -> str:
    """The code version that measured a run ('unknown' for a run that logged none)."""
    tags = run.data.tags
    return tags.get(Tag.CODE_VERSION) or (tags.get(Tag.OLD_COMMIT, "")[:12] or "unknown")


class JobRun:
    """One MLflow run; metrics are kept finite (MLflow stores nan, but the UI and tables choke on it)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, "None" if v is None else redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, redact(str(v))) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def set_description(self, markdown: str) -> None:
        """The note the MLflow UI shows on the run's page (Markdown)."""
        self.client.set_tag(self.run_id, Tag.NOTE, redact(markdown))

    def log_system_metrics(self, samples: Any, started_at: float) -> None:
        """A trace (t_s plus one column per signal) as MLflow system metrics: `system/<column>`, one
        step per sample at its own time, which the run's System metrics tab plots."""
        start_ms = (started_at if math.isfinite(started_at) else time.time() - samples["t_s"].max()) * 1000
        items = [
            Metric(MetricFamily.SYSTEM.of(column), float(value), int(start_ms + t * 1000), step)
            for column in samples.columns
            if column != "t_s" and pd.api.types.is_numeric_dtype(samples[column])
            for step, (t, value) in enumerate(zip(samples["t_s"], samples[column], strict=True))
            if value is not None and math.isfinite(float(value))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def log_dataset(self, name: str, source: str, config: Mapping[str, Any]) -> None:
        """The run list's Dataset column: the data set the job ran on (an evaluation input), with a
        digest of its configuration, so that two runs on one data set cut alike show one digest."""
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
        dataset = Dataset(name, digest, source_type="ecopipe", source=json.dumps({"source": redact(source)}))
        context = InputTag(key=Tag.DATA_CONTEXT, value="eval")
        inputs = [DatasetInput(dataset, tags=[context])]
        # A sweep's jobs all log one data set, new to the experiment: their first writes can collide.
        _once_more_on_collision(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, redact(text), name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_text(self.run_id, redact(json.dumps(dict(data), indent=2, default=str)), name)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_frame_csv(self, frame: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False)
            self.client.log_artifact(self.run_id, str(path))


def _once_more_on_collision(write: Callable[[], None]) -> None:
    """Write a row that other jobs may be writing at the same moment. MLflow's SQL store adds a data
    set new to the experiment by select, then insert: two jobs' first writes of one can collide, and
    the loser's insert breaks the unique key (16 jobs on PostgreSQL did collide). The winner's row is
    then there, and the loser's second try finds it and links it; an error of any other cause comes
    again on that try and is raised."""
    try:
        write()
    except MlflowException:
        write()


def _tag_sweep_array(client: MlflowClient, parent: str, array_id: str) -> None:
    """Every job of the array writes the same value. MLflow's SQL store sets a tag by select, then
    insert: two jobs' first writes can collide, and the loser's insert breaks the unique key. It then
    finds the winner's value, its own, and the job goes on (16 jobs on PostgreSQL did collide); a
    different value is a real conflict, and is raised."""
    try:
        client.set_tag(parent, slurm.ARRAY_TAG, array_id)
    except MlflowException:
        if client.get_run(parent).data.tags.get(slurm.ARRAY_TAG) != array_id:
            raise


# The run list's Source column: what made the run (MLflow's fluent API would write the script's path).
SOURCE_TAGS = {Tag.SOURCE_NAME: "ecopipe", Tag.SOURCE_TYPE: "LOCAL"}


def open_run(cfg: TrackingConfig, run_name: str, tags: Mapping[str, Any]) -> JobRun:
    """Create a job run, linked to the sweep's parent run when one is announced in the environment."""
    client, experiment = open_experiment(cfg)
    all_tags = dict(tags) | process_tags() | slurm.job_tags() | SOURCE_TAGS
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        all_tags |= {Tag.PARENT_RUN: parent, Tag.SWEEP_ID: parent}
        if slurm.ARRAY_TAG in all_tags:  # the sweep's SLURM array, known once its first job runs
            _tag_sweep_array(client, parent, all_tags[slurm.ARRAY_TAG])
    run = client.create_run(
        experiment, run_name=run_name, tags={k: redact(str(v)) for k, v in all_tags.items() if v is not None}
    )
    return JobRun(client, run.info.run_id)


RECORDED_NOTE = "ecopipe: recorded as FAILED in MLflow run "


def end_run(client: MlflowClient, run_id: str, why: str, status: str = "KILLED", state: str = KILLED) -> None:
    """End a run that did not finish, saying why: `ecopipe.error` (credentials redacted) and
    `ecopipe.status` (killed or failed), then its MLflow status, KILLED or FAILED."""
    tags = [RunTag(Tag.ERROR, redact(why)[:5000]), RunTag(Tag.STATUS, state)]
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def fail_run(job: JobRun, error: BaseException) -> None:
    """End the run FAILED with the error, or KILLED when a stop signal ended it; a stop arriving
    meanwhile waits until the run is ended."""
    with stops_deferred():
        if isinstance(error, Stopped):
            end_run(job.client, job.run_id, str(error))
            return
        end_run(job.client, job.run_id, f"{type(error).__name__}: {error}", "FAILED", "failed")
        error.add_note(RECORDED_NOTE + job.run_id)


def recorded(error: BaseException) -> bool:
    """Whether a run already carries this error (else it struck before the run opened)."""
    return any(note.startswith(RECORDED_NOTE) for note in getattr(error, "__notes__", ()))


@contextmanager
def job_run(cfg: TrackingConfig, run_name: str, tags: Mapping[str, Any]) -> Iterator[JobRun]:
    """Open a run; end it FINISHED, or FAILED with the error as a tag, whatever happens inside."""
    job = open_run(cfg, run_name, tags)
    try:
        yield job
    except BaseException as error:
        fail_run(job, error)
        raise
    if job.client.get_run(job.run_id).data.tags.get(Tag.STATUS) == KILLED:  # reaped while alive
        job.client.delete_tag(job.run_id, Tag.STATUS)
        job.client.delete_tag(job.run_id, Tag.ERROR)
    job.client.set_terminated(job.run_id, status="FINISHED")
