"""Shared fixtures: real Hydra composition of the project's configs and a real SQLite MLflow store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ecopipe.config import CONFIG_DIR, register_configs

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
register_configs()

# Short windows: tests check correctness, not the figures' precision.
FAST = ["monitor=quick", "monitor.trials=2", "monitor.min_window_s=0.05", "monitor.idle_s=0.05"]


@pytest.fixture(autouse=True)
def fresh_idle_baseline(monkeypatch):
    """The idle baseline is cached for a sweep's process; each test is its own sweep."""
    from ecopipe.stages import inference

    monkeypatch.setattr(inference, "_IDLE_CACHE", {})


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def client(store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store)


@pytest.fixture
def make_cfg(store: str) -> Callable[..., DictConfig]:
    def _compose(*overrides: str, fast: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("config", overrides=[f"tracking.uri={store}", *(FAST if fast else []), *overrides])

    return _compose


def run_cli(*args: str, cwd: Path, module: str = "ecopipe") -> subprocess.CompletedProcess[str]:
    """`python -m <module>` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextmanager
def mlflow_serving(command: str, store: str, *args: str) -> Iterator[str]:
    """`mlflow <command>` (server or ui) of `store` on a free port of 127.0.0.1, until the block ends:
    its address, http://127.0.0.1:<port>."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", command, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", store, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                requests.get(f"{address}/health", timeout=1)
                break
            except requests.RequestException:
                assert server.poll() is None and time.monotonic() < deadline, (
                    f"mlflow {command} did not start"
                )
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
