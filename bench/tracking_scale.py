"""Tracking and aggregation at scale: logging 1,000 runs, aggregating 1,000 and 10,000 runs.

Runs are synthetic but shaped like a job's (about a hundred metrics, sixty params, the tags), see
bench/synthetic_store.py. Aggregation reads a SQLite store with three SQL queries instead of
MLflow's search_runs, which loads each run's metrics row by row; both paths are timed at 1,000.
With $ECOPIPE_BENCH_STORE_URI (a PostgreSQL database, set by `make cluster-up` in
.cluster/cluster.env) the same is timed at 10,000 runs on PostgreSQL, both readers.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

from bench.common import median
from bench.synthetic_store import synthetic_store
from ecopipe.aggregate import aggregate

EXPERIMENT = "ecopipe-bench"
POSTGRES_ENV = "ECOPIPE_BENCH_STORE_URI"


def _timed(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return median(times)


def run() -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        logged = f"sqlite:///{tmp}/logged.db"
        started = time.perf_counter()
        synthetic_store(logged, 1000, EXPERIMENT, logged=1000)  # every run through MlflowClient
        seconds = time.perf_counter() - started
        rows.append(
            {
                "operation": "log 1,000 runs through MlflowClient (SQLite)",
                "seconds": seconds,
                "runs per second": 1000 / seconds,
            }
        )
        for n in (1000, 10000):
            uri = f"sqlite:///{tmp}/store{n}.db"
            synthetic_store(uri, n, EXPERIMENT)
            out = Path(tmp) / f"out{n}"
            readers = ("sql", "search") if n == 1000 else ("sql",)
            for reader in readers:
                seconds = _timed(
                    lambda uri=uri, reader=reader: aggregate(uri, EXPERIMENT, reader=reader),
                    repeats=3 if reader == "sql" else 1,
                )
                rows.append(
                    {
                        "operation": f"aggregate {n:,} runs into tables ({reader} reader)",
                        "seconds": seconds,
                        "runs per second": n / seconds,
                    }
                )
            seconds = _timed(lambda uri=uri, out=out: aggregate(uri, EXPERIMENT, out_dir=out), repeats=1)
            rows.append(
                {
                    "operation": f"aggregate {n:,} runs, tables + CSV/Markdown/HTML/PNG files",
                    "seconds": seconds,
                    "runs per second": n / seconds,
                }
            )
    rows += _postgresql(os.environ.get(POSTGRES_ENV))
    return pd.DataFrame(rows)


def _postgresql(uri: str | None, n: int = 10000) -> list[dict]:
    """Both readers over `n` runs in a PostgreSQL store, in an experiment of their own."""
    if not uri:
        print(f"tracking: no ${POSTGRES_ENV} (make cluster-up sets one): PostgreSQL rows skipped")
        return []
    experiment = f"{EXPERIMENT}-{uuid.uuid4().hex[:8]}"
    synthetic_store(uri, n, experiment)
    rows = []
    for reader in ("sql", "search"):
        seconds = _timed(
            lambda reader=reader: aggregate(uri, experiment, reader=reader),
            repeats=3 if reader == "sql" else 1,
        )
        rows.append(
            {
                "operation": f"aggregate {n:,} runs into tables, PostgreSQL ({reader} reader)",
                "seconds": seconds,
                "runs per second": n / seconds,
            }
        )
    return rows
