"""Orchestration overhead per job: a multirun of N tiny jobs, minus their measured windows, over N.

Imports are measured apart (one `python -c "import ..."`), since a sweep pays them once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.common import median
from ecopipe.names import Tag

TINY = [
    "model=logistic_regression",
    "dataset=iris",
    "monitor.trials=1",
    "monitor.min_window_s=0",
    "monitor.idle_s=0",
    "monitor.warmup_batches=0",
]
ROOT = Path(__file__).resolve().parents[1]


def import_seconds(repeats: int = 3) -> float:
    code = "import ecopipe.__main__, ecopipe.sweep, ecopipe.aggregate"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return median(times)


def sweep(n_jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ecopipe",
                "-m",
                *TINY,
                f"seed=range(0,{n_jobs})",
                f"tracking.uri={store}",
                f"hydra.sweep.dir={tmp}/multirun",
            ],
            check=True,
            cwd=tmp,
            env=env,
            capture_output=True,
        )
        wall = time.perf_counter() - started
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("ecopipe").experiment_id
        runs = [
            r
            for r in client.search_runs([experiment], max_results=10000)
            if r.data.tags.get(Tag.KIND) != "sweep"
        ]
        windows = sum(r.data.metrics.get("window_s", 0.0) for r in runs)
    return {"wall_s": wall, "windows_s": windows, "jobs": len(runs)}


def run() -> pd.DataFrame:
    imports = import_seconds()
    rows = []
    for n in (10, 50):
        result = sweep(n)
        rows.append(
            {
                "jobs": n,
                "sweep wall time (s)": result["wall_s"],
                "sum of measured windows (s)": result["windows_s"],
                "imports, once (s)": imports,
                "overhead per job after imports (s)": (result["wall_s"] - imports - result["windows_s"]) / n,
            }
        )
    return pd.DataFrame(rows)
