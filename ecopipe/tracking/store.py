"""The tracking store: its URI, the checks that refuse one that cannot work before anything loads,
where an experiment's artifacts go, and the URI as results show it."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import requests
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request
from omegaconf import DictConfig, OmegaConf, open_dict
from sqlalchemy.engine import make_url

from ecopipe.config import ConfigError, TrackingConfig
from ecopipe.credentials import check_secret_characters, redact

DEFAULT_DB = "mlflow.db"


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
def schema_lock(uri: str) -> Iterator[None]:
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
