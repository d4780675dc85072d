"""The stores an aggregation reads: each checked once, its runs read (dead runs reaped), all combined.

One or several tracking stores (a GPU machine's and a CPU machine's), each given once; a SQLite store
whose file is absent is refused, never created. A run id found in two stores (a copied database file)
is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from ecopipe.aggregation.load import experiment_name, read_runs, sql_store
from ecopipe.credentials import redact
from ecopipe.tracking.liveness import reap_dead_runs
from ecopipe.tracking.resume import reused_from_other_code, reused_runs
from ecopipe.tracking.store import shown_uri, sqlite_path, store_writable

__all__ = [
    "AggregationError",
    "StoreRuns",
    "check_stores",
    "combine_stores",
    "missing_store",
    "read_store",
    "store_labels",
]


class AggregationError(ValueError):
    """Nothing to aggregate from: no such store or experiment, or a malformed filter."""


def store_labels(uris: Sequence[str]) -> dict[str, str]:
    """Each store as the tables name it (shown_uri): as few trailing path parts as tell them apart."""
    for parts in range(1, 64):
        labels = {uri: shown_uri(uri, parts) for uri in uris}
        if len(set(labels.values())) == len(set(uris)):
            return labels
    return {uri: redact(uri) for uri in uris}


def _backend_store(tracking_uri: str, experiment_id: str, name: str, store_uri: str | None) -> str | None:
    """The database behind a tracking server, when given and really its store (same experiment)."""
    if not store_uri or sql_store(tracking_uri) is not None:  # the tracking URI is a store already
        return None
    engine = sql_store(store_uri)
    if engine is None:
        raise AggregationError(f"--store-uri {redact(store_uri)}: expected postgresql://... or sqlite:///...")
    try:
        found = experiment_name(engine, experiment_id)
    except SQLAlchemyError as error:
        raise AggregationError(f"--store-uri {redact(store_uri)}: {error.args[0]}") from error
    if found != name:
        raise AggregationError(
            f"--store-uri {redact(store_uri)} is not the store behind {tracking_uri}: its experiment "
            f"{experiment_id} is {found!r}, not {name!r}"
        )
    return store_uri


def _same_store_key(uri: str) -> str:
    """What makes two URIs one store: a SQLite file's resolved path, else the URI itself."""
    path = sqlite_path(uri)
    return str(path.resolve()) if path is not None else uri.rstrip("/")


def check_stores(uris: Sequence[str], sweep_id: str | None = None, store_uri: str | None = None) -> None:
    """Refuse a store given twice, and the options that name something inside one store
    (a sweep's parent run, the database behind one server) when there are several."""
    seen: dict[str, str] = {}  # store -> the URI that named it first
    for uri in uris:
        key = _same_store_key(uri)
        if key in seen:
            also = "" if seen[key] == uri else f" (as {redact(seen[key])} and {redact(uri)})"
            raise AggregationError(f"--tracking-uri {redact(uri)} is given twice{also}: give each store once")
        seen[key] = uri
    if len(uris) > 1:
        for option, value, why in (
            ("--sweep", sweep_id, "a sweep's parent run lives in one store"),
            ("--store-uri", store_uri, "it is the database behind one tracking server"),
        ):
            if value:
                raise AggregationError(
                    f"{option} works with one --tracking-uri only ({why}); with {len(uris)} stores, "
                    "aggregate a whole experiment (--experiment NAME, the same name in each store) and "
                    "narrow it with --filter"
                )


def missing_store(uri: str) -> str | None:
    """Why a SQLite store cannot be read: its file is absent (reading must never create one)."""
    path = sqlite_path(uri)
    return f"no tracking store at {path} ({uri})" if path is not None and not path.is_file() else None


@dataclass
class StoreRuns:
    uri: str
    runs: pd.DataFrame
    reused: dict[str, str]  # run id -> job name: a resumed sweep's earlier points
    other_code: dict[str, str]  # run id -> code version: the reused runs another code version measured
    read_only: bool  # an archived store: nothing is written to it, dead runs are not reaped


def read_store(
    uri: str,
    experiment: str,
    sweep_id: str | None,
    filter_string: str | None,
    reader: str,
    store_uri: str | None,
    reap_after_h: float | None = None,
    label: str = "",
) -> StoreRuns:
    """One store's runs of the experiment (of one sweep when `sweep_id` is given), dead runs reaped;
    `label` names the store in the runs' `store` column."""
    if missing := missing_store(uri):
        raise AggregationError(missing)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise AggregationError(f"no experiment named {experiment!r} in {redact(uri)}")
    read_only = not store_writable(uri)
    if not read_only:
        reap_dead_runs(client, found.experiment_id, reap_after_h)  # a killed job's run must not stay RUNNING
    store_uri = _backend_store(uri, found.experiment_id, experiment, store_uri)
    try:
        reused = reused_runs(client, sweep_id) if sweep_id else {}
        other_code = reused_from_other_code(client, sweep_id) if sweep_id else {}
    except MlflowException as error:  # no such run: said in one line, as every other refusal
        raise AggregationError(f"--sweep {sweep_id}: {error.message} in {redact(uri)}") from error
    try:
        runs = read_runs(
            client, [found.experiment_id], sweep_id, filter_string, reader, store_uri, list(reused)
        )
    except MlflowException as error:
        raise AggregationError(f"--filter {filter_string!r}: {error.message}") from error
    return StoreRuns(uri, runs.assign(store=label), reused, other_code, read_only)


def combine_stores(reads: Sequence[StoreRuns]) -> tuple[pd.DataFrame, list[str]]:
    """The stores' runs in one frame, each run id once, and the ids found in more than one store.

    A run id is a random UUID: one found in two stores is the same run in a copied database file, so
    the first store given that holds it keeps it, and it is counted once."""
    frames = [read.runs for read in reads if not read.runs.empty] or [reads[0].runs]
    runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    repeated = runs["run_id"].duplicated()
    copied = sorted(set(runs.loc[repeated, "run_id"]))
    runs = runs[~repeated].sort_values(["start_time", "run_id"], kind="stable")
    return runs.reset_index(drop=True), copied
