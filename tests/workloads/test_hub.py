"""Offline, pretrained jobs fail fast: the hub is asked once per sweep, never retried per job.

A local HTTP server stands in for an unreachable hub (it answers 503 to everything) and counts every
request the jobs make to it; the jobs run in real processes with an empty Hugging Face cache."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ecopipe.names import Tag
from ecopipe.workloads import hub
from tests.conftest import FAST, run_cli

OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", hub.HUB_ENV)


class DownHub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def answer(self) -> None:
        DownHub.requests.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.end_headers()

    do_GET = do_HEAD = do_POST = answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def down_hub(tmp_path: Path, monkeypatch) -> Iterator[list[str]]:
    """HF_ENDPOINT on a server that is down; no offline switch set; an empty cache."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), DownHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for key in OFFLINE_SWITCHES:  # set first, so that whatever a test writes there is undone after it
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    DownHub.requests = []
    yield DownHub.requests
    server.shutdown()


def test_sweep_of_pretrained_jobs_asks_the_hub_once(tmp_path, store, client, down_hub):
    done = run_cli(
        "-m",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *FAST,
        "model=gpt2,opt-125m,qwen2.5-0.5b",
        "dataset=synthetic_text",
        "dataset.limit=2",
        cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # three jobs, each refused and counted
    assert down_hub == ["HEAD /"]  # one probe before the first job; no retries, no per-job request
    refusals = [line for line in (done.stdout + done.stderr).splitlines() if "job refused:" in line]
    assert len(refusals) == 3, done.stdout[-3000:] + done.stderr[-3000:]  # one line each
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    jobs = [r for r in client.search_runs([experiment]) if Tag.KIND not in r.data.tags]
    assert len(jobs) == 3 and {r.info.status for r in jobs} == {"FAILED"}
    for run in jobs:
        error = run.data.tags[Tag.ERROR]
        assert "the hub is unreachable" in error and "answered HTTP 503; checked once" in error
        assert "HF_HUB_OFFLINE=1 is set" not in error  # it is not: the message says what happened


def test_lone_pretrained_job_asks_the_hub_once(tmp_path, store, down_hub):
    done = run_cli(
        f"tracking.uri={store}", "model=gpt2", "dataset=synthetic_text", "dataset.limit=2", cwd=tmp_path
    )
    assert done.returncode == 2 and "the hub is unreachable" in done.stderr, done.stderr[-3000:]
    assert down_hub == ["HEAD /"]


def test_offline_setting_is_named_and_nothing_is_asked(monkeypatch, down_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_unreachable() == "HF_HUB_OFFLINE=1 is set"
    assert hub.describe_offline(hub.hub_unreachable()) == "HF_HUB_OFFLINE=1 is set, so only cached files load"
    assert down_hub == []


def test_reachable_hub_is_asked_once_per_process(monkeypatch, down_hub):
    monkeypatch.setattr(hub, "_probe", lambda endpoint: "")
    assert hub.hub_unreachable() is None and os.environ[hub.HUB_ENV] == ""
    monkeypatch.setattr(hub, "_probe", lambda endpoint: pytest.fail("probed twice"))
    assert hub.hub_unreachable() is None and "HF_HUB_OFFLINE" not in os.environ
