"""Aggregation's tests: a real SQLite MLflow store holding runs logged the way jobs log them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from ecopipe.names import Tag
from ecopipe.tracking.experiment import ensure_experiment
from ecopipe.tracking.liveness import current_user
from tests.conftest import run_cli

EXPERIMENT = "agg"
H100, T4 = "NVIDIA H100 SXM 80GB", "NVIDIA T4"
GPU_SOURCES = {"gpu": "nvml_counter", "cpu": "rapl", "ram": "none"}
CPU_SOURCES = {"gpu": "none", "cpu": "estimated_specpower", "ram": "none"}
MEASURED = {"nvml_counter", "nvml_power_polling", "rapl", "rapl_job_share", "nvml_counter_whole_gpu"}


def figures(energy: float, quality: float | None = 0.9, params: float = 650.0) -> dict[str, float]:
    """A job's headline metrics, related by the impact and ESS formulas (WORLD-like factors)."""
    co2e = energy / 3.6e6 * 1.5 * 480.0
    metrics = {
        "energy_per_1k_gross_j": energy,
        "energy_per_1k_net_j": energy * 0.7,
        "energy_per_1k_gross_ci95_j": energy * 0.05,
        "co2e_g_per_1k": co2e,
        "water_l_per_1k": energy / 3.6e6 * 4.0,
        "ess": params / 1e6 / co2e,
        "ess_run": params / 1e6 / co2e / 3,
        "throughput_per_s": 1e5 / energy,
        "window_s": 2.5,
        "samples": 1000.0,
        "effective_parameters": params,
        "latency_p50_s": 0.001,  # logged by every job, not read by aggregation
    }
    if quality is not None:
        metrics["quality.accuracy"] = quality
    return metrics


class Store:
    """Logs runs with MlflowClient exactly as a job, a sweep callback and a re-impact do."""

    def __init__(self, client, uri: str) -> None:
        self.client, self.uri = client, uri
        self.experiment_id = ensure_experiment(client, uri, EXPERIMENT)
        self.clock = 1_700_000_000_000

    def _start(self) -> int:
        self.clock += 1000
        return self.clock

    def sweep(self) -> str:
        """An ended sweep of this user, as `python -m ecopipe -m` leaves one."""
        tags = {"ecopipe.kind": "sweep", Tag.USER: current_user()}
        run = self.client.create_run(self.experiment_id, start_time=self._start(), tags=tags)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def job(
        self,
        model: str = "logistic_regression",
        precision: str = "fp32",
        hardware: str = H100,
        metrics: dict[str, float] | None = None,
        *,
        dataset: str = "digits",
        region: str = "WORLD",
        sources: dict[str, str] | None = None,
        sweep: str | None = None,
        status: str = "FINISHED",
        error: str | None = None,
        batch_size: int = 8,
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        sources = sources or GPU_SOURCES
        tags = {
            Tag.MODEL: model,
            Tag.DATASET: dataset,
            Tag.PRECISION: precision,
            Tag.HARDWARE: hardware,
            Tag.HARDWARE_KEY: hardware.split()[1].lower() if " " in hardware else hardware,
            Tag.REGION: region,
            Tag.ATTRIBUTION: "gross",
            Tag.CONFIG_HASH: f"{model}-{dataset}-{precision}-{hardware}-{region}",
            **{f"energy_source.{c}": s for c, s in sources.items()},
            **{f"energy_measured.{c}": str(s in MEASURED).lower() for c, s in sources.items()},
            **(extra_tags or {}),
        }
        if sweep:
            tags |= {"mlflow.parentRunId": sweep, Tag.SWEEP_ID: sweep}
        if error:
            tags |= {"ecopipe.error": error, Tag.STATUS: "failed"}
        start = self._start()
        run_id = self.client.create_run(
            self.experiment_id,
            start_time=start,
            tags=tags,
            run_name=f"{model}-{dataset}-{precision}-bs{batch_size}",
        ).info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, start, 0) for k, v in (metrics or {}).items()],
            params=[Param("batch_size", str(batch_size)), Param("model.name", model)],
        )
        self.client.set_terminated(run_id, status=status, end_time=start + 500)
        return run_id


@pytest.fixture
def runs(client, store) -> Store:
    return Store(client, store)


def cell(table: pd.DataFrame, column: str, **key: str) -> float:
    rows = table
    for name, value in key.items():
        rows = rows[rows[name] == value]
    assert len(rows) == 1, f"{key}: {len(rows)} rows"
    return rows[column].iloc[0]


def grid(runs: Store, sweep: str | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """fp32 and fp16 on an H100; int8 alone on a T4 (no fp32 there to compare with)."""
    logged = {
        ("fp32", H100): figures(120.0, 0.95),
        ("fp16", H100): figures(70.0, 0.94),
        ("int8", T4): figures(310.0, 0.91),
    }
    for (precision, hardware), metrics in logged.items():
        runs.job(precision=precision, hardware=hardware, metrics=metrics, sweep=sweep)
    return logged


def aggregate_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m ecopipe.aggregate` in a fresh process, as a user runs it."""
    return run_cli(*args, cwd=cwd, module="ecopipe.aggregate")
