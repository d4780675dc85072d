"""bench/gpu_check.sh as a user runs it: the whole check rehearsed on the CPU, cut off, or failing a step."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient

from bench.gpu import plan
from ecopipe.hardware import cuda_available
from tests.gpu_check.conftest import ROOT, SCRIPT_ENV, gpu_check


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The whole check rehearsed on the CPU once, for the tests that read what it wrote."""
    out = tmp_path_factory.mktemp("rehearsal")
    return out, gpu_check("--cpu", str(out), "--steps", ",".join(plan.STEPS))  # the opt-in pytest too


@pytest.mark.timeout(600)  # the rehearsal's own budget is 420 s: it reports a slow step before this fires
def test_cpu_rehearsal_runs_every_step_and_reports_them(rehearsal):
    out, done = rehearsal
    report = json.loads((out / "report.json").read_text())
    failed = [(s["step"], s["status"], s["notes"]) for s in report["steps"] if s["status"] != "ok"]
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["counter", "idle", "headline", "precisions", "engines", "sweep", "rapl", "pytest"]
    rapl = steps.pop("rapl")  # without readable RAPL (CI's VMs), the one step with nothing to do
    no_rapl = rapl["status"].startswith("skipped: no readable RAPL on this host")
    assert no_rapl or rapl["status"] == "ok", rapl
    skipped = [("rapl", rapl["status"], [])] if no_rapl else []
    assert done.returncode == 0 and failed == skipped, (failed, done.stdout[-3000:])
    returned = {"logs", "mlartifacts", "mlflow.db", "report.json", "report.md", "traces"}
    assert returned <= {p.name for p in out.iterdir()} <= returned | {"mlflow.db.lock"}  # artifacts too
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f"{s}.log" for s in [*steps, "rapl"])
    assert all(s["seconds"] <= s["limit_s"] for s in report["steps"])
    figures = {s: {f["name"]: f for f in step["figures"]} for s, step in steps.items()}
    # The simulated GPU against the recorder's two signals: 3 trials, each within its tolerance.
    for signal_name in ("job / counter", "power field / counter"):
        ratios = [f["value"] for name, f in figures["counter"].items() if name.endswith(signal_name)]
        assert len(ratios) == 3 and all(r == pytest.approx(1.0, abs=0.01) for r in ratios)
    assert "not an external meter" in " ".join(steps["counter"]["notes"])
    assert len(pd.read_csv(out / "traces" / "counter.csv")) > 10
    idle = figures["idle"]
    assert idle["idle power, no CUDA context"]["value"] == pytest.approx(300.0, rel=0.05)
    assert figures["headline"]["weights hold"]["value"] == "torch.float32"
    assert "NVIDIA H100 SXM 80GB (SIMULATED)" in " ".join(steps["headline"]["notes"])
    assert figures["precisions"]["int8: weights hold"]["value"].startswith("qint8")
    (int4,) = [n for n in steps["precisions"]["notes"] if n.startswith("int4:")]
    assert "cannot run" in int4 and "\n" not in int4
    assert figures["sweep"]["jobs FINISHED"]["value"] == "4 of 4"
    text = (out / "report.md").read_text()
    assert (
        "SIMULATED" in text
        and f"{8 - no_rapl} of 8 steps passed, {int(no_rapl)} skipped, 0 failed" in done.stdout
    )
    assert "after 8 of 8 steps" in text
    runs = MlflowClient(f"sqlite:///{out / 'mlflow.db'}").search_experiments()
    assert {e.name for e in runs} >= {"ecopipe", "gpu-check-sweep"}


@pytest.mark.timeout(600)  # with the rehearsal, when this test runs first or alone
def test_the_rehearsal_store_and_a_cpu_sweep_of_the_same_grid_make_two_hardware_columns(rehearsal, tmp_path):
    """The report's own commands: the same grid on this CPU, then one table over both stores."""
    out, _ = rehearsal
    (sweep,) = [s for s in json.loads((out / "report.json").read_text())["steps"] if s["step"] == "sweep"]
    (note,) = [n for n in sweep["notes"] if n.startswith("the same grid on a CPU")]
    twin, merge = re.findall(r"`([^`]+)`", note)
    assert "hardware.device=cpu" in twin and "fake_gpu_watts" not in twin and "hardware=h100" not in twin
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    python = shlex.quote(sys.executable)
    for line in (f"{twin} hydra.sweep.dir=sweep", f"{merge} --out merged"):  # as pasted into a shell
        assert line.startswith("python -m ecopipe")
        done = subprocess.run(
            ["bash", "-c", line.replace("python", python, 1)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "merged" / "tables" / "energy_gross.csv")
    simulated = "NVIDIA H100 SXM 80GB (SIMULATED)"
    cpu = next(c for c in table.columns if c not in {"model", "precision", simulated})
    assert simulated in table.columns and len(table.columns) == 4, table.columns
    assert len(table) == 4 and table[[simulated, cpu]].notna().all().all()  # 2 models x 2 precisions
    assert set(table["model"]) == {"opt-125m", "opt-350m"} and set(table["precision"]) == {"fp32", "bf16"}
    sources = pd.read_csv(tmp_path / "merged" / "tables" / "energy_source.csv")
    assert set(sources[simulated]) == {"fake+estimated_specpower+estimated_rss"}  # each column its own label
    assert set(sources[cpu]) == {"estimated_specpower+estimated_rss"}


def step_processes(out: Path) -> list[int]:
    """Live step processes of the check writing into `out`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(process.info["cmdline"] or [])
        if "bench.gpu.steps" in line and str(out) in line and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_call_cut_off_after_a_step_returns_that_steps_report_and_leaves_no_step_running(tmp_path, stop):
    """The check killed as a device's time limit kills it, or stopped: the report of the steps done is
    there, and the step it was running (in a session of its own) does not go on without it."""
    process = subprocess.Popen(
        ["bash", "bench/gpu_check.sh", "--cpu", str(tmp_path), "--steps", "idle,precisions,sweep"],
        cwd=ROOT,
        env=SCRIPT_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    report_path, deadline = tmp_path / "report.json", time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            steps = json.loads(report_path.read_text())["steps"] if report_path.exists() else []
            if steps and steps[0]["status"] != "not run yet" and step_processes(tmp_path):
                break  # idle done, precisions (~30 s here) running
            time.sleep(0.2)
    finally:
        process.send_signal(stop)  # bash exec'ed the check: this is its Python process
        process.wait()
    gone = time.monotonic() + 10  # the step's watchdog polls twice a second, then SIGTERM, 5 s, SIGKILL
    while step_processes(tmp_path) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not step_processes(tmp_path)
    idle, precisions, sweep = json.loads(report_path.read_text())["steps"]
    assert idle["status"] == "ok" and idle["figures"]
    assert precisions["status"] == sweep["status"] == "not run yet"
    text = (tmp_path / "report.md").read_text()
    assert "after 1 of 3 steps" in text and "## precisions: not run yet (limit 75 s)" in text
    assert (tmp_path / "logs" / "idle.log").exists()


@pytest.mark.skipif(cuda_available(), reason="checks how the NVML steps fail where there is no GPU")
def test_a_failing_step_is_reported_and_the_next_still_runs(tmp_path):
    """Without a GPU both NVML steps fail, each saying why, and the exit status counts them."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", str(tmp_path), "--steps", "idle,counter"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 2
    assert report["machine"]["gpu"].startswith("not identified")
    assert [(s["step"], s["status"].split()[0]) for s in report["steps"]] == [
        ("counter", "failed"),
        ("idle", "failed"),
    ]
    for step in report["steps"]:  # neither reads an NVML index the UUID did not give
        assert "not resolved to an NVML device through its UUID" in " ".join(step["notes"])
