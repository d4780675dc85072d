"""Tracking and aggregation at scale: logging 1,000 runs, aggregating 1,000 and 10,000 runs.

Runs are synthetic but shaped like a job's (about a hundred metrics, sixty params, the tags), see
ecopipe.aggregation.synthetic. Aggregation reads a SQLite store with three SQL queries instead of
MLflow's search_runs, which loads each run's metrics row by row; both paths are timed at 1,000.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import median
from ecopipe.aggregate import aggregate
from ecopipe.aggregation.synthetic import synthetic_store

EXPERIMENT = "ecopipe-bench"


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
    return pd.DataFrame(rows)
