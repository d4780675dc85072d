"""The GPU check's plan, its steps' process groups, the GPU it identifies and the folder it writes to."""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from bench.gpu import identify, plan
from bench.gpu.__main__ import TERM_GRACE_S, _fresh, _outcome, run_in_group, wait_for_gpu
from bench.gpu.steps import STEPS
from tests.gpu_check.conftest import gpu_check


def test_step_limits_fit_the_default_total_in_order_of_value():
    limits = {name: step.limit_s for name, step in plan.STEPS.items()}
    default = plan.choose(None, None)
    assert sum(limits[name] for name in default.steps) == default.budget_s <= 420
    assert default.steps == ("counter", "idle", "headline", "precisions", "engines", "sweep", "rapl")
    assert list(limits) == list(STEPS)  # every step has a limit, and runs in the plan's order
    chosen = plan.choose("sweep,pytest,counter", None)
    assert chosen.steps == ("counter", "sweep", "pytest")  # the plan's order, whatever the order asked
    assert chosen.budget_s == limits["counter"] + limits["sweep"] + limits["pytest"]
    assert plan.choose(None, 360).budget_s == 360
    with pytest.raises(ValueError, match=r"unknown step\(s\) idel; allowed: counter, idle, headline"):
        plan.choose("idel", None)
    with pytest.raises(ValueError, match="no step named"):  # `--steps ""` is not "every step"
        plan.choose("", None)
    with pytest.raises(ValueError, match="positive"):
        plan.choose(None, 0)


def test_the_script_prints_its_plan_first_and_refuses_a_bad_step_before_installing(tmp_path):
    done = gpu_check(str(tmp_path), "--steps", "counter,idel")  # GPU mode: it would install the kit next
    assert done.returncode == 2 and "--steps 'counter,idel': unknown step(s) idel" in done.stderr
    assert "installing" not in done.stdout and not list(tmp_path.iterdir())
    done = gpu_check("--cpu", str(tmp_path), "--steps", "idle", "--budget-s", "30")
    first = done.stdout.splitlines()[0]
    assert first.startswith("gpu check: 1 steps, their limits add up to 25 s; budget 30 s"), done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["budget_s"] == 30


def running(pid: int) -> bool:
    """Alive, not a zombie: an ended orphan stays a zombie until whoever adopted it reaps it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


HANGING_STEP = """
import subprocess, sys, time
from pathlib import Path
from bench.gpu.context import StepResult
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
Path(sys.argv[1]).write_text(str(child.pid))
result = StepResult(Path(sys.argv[2]))
result.figure("finished before the hang", 1.5, "J")
time.sleep(300)
"""


def test_a_step_stopped_at_its_limit_ends_its_children_and_keeps_its_figures(tmp_path):
    child_pid, result = tmp_path / "child.pid", tmp_path / "result.json"
    command = [sys.executable, "-c", HANGING_STEP, str(child_pid), str(result)]
    started = time.monotonic()
    status, ended = run_in_group(command, tmp_path / "step.log", timeout_s=8)
    assert status is None and time.monotonic() - started < 8 + 2 * TERM_GRACE_S
    child = int(child_pid.read_text())
    assert child in ended and not running(child)  # the grandchild is gone, not only the step
    outcome = _outcome("engines", 8.0, status, 8.0, result, tmp_path / "step.log", ended)
    assert outcome.status == "failed (stopped at its 8-s limit; the figures it finished are kept)"
    assert [f["name"] for f in outcome.figures] == ["finished before the hang"]


DEAF_STEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def test_a_step_that_ignores_sigterm_is_killed(tmp_path):
    started = time.monotonic()
    status, ended = run_in_group([sys.executable, "-c", DEAF_STEP], tmp_path / "step.log", timeout_s=3)
    assert status is None and len(ended) == 1 and not running(ended[0])
    assert 3 + TERM_GRACE_S - 1 < time.monotonic() - started < 3 + 2 * TERM_GRACE_S  # SIGTERM, then SIGKILL


def test_a_step_that_exits_leaving_a_child_behind_has_it_ended(tmp_path):
    command = [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(['sleep', '300'])"]
    status, ended = run_in_group(command, tmp_path / "step.log", timeout_s=30)
    assert status == 0 and len(ended) == 1 and not running(ended[0])


def fake_gpu(monkeypatch, known: dict[bytes, int]) -> None:
    """torch's cuda:0 has UUID aaaa; NVML knows the GPUs in `known` (UUID -> NVML index). Fakes of the
    GPU this machine lacks, behind torch's and pynvml's own functions; the identification runs for real."""
    import pynvml
    import torch

    def handle_by_uuid(uuid: bytes):
        if uuid not in known:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return f"handle{known[uuid]}"

    def not_supported(*_):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="aaaa"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    for name, fn in {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetHandleByUUID": handle_by_uuid,
        "nvmlDeviceIsMigDeviceHandle": lambda handle: 0,
        "nvmlDeviceGetMigMode": not_supported,
        "nvmlDeviceGetIndex": lambda handle: int(handle.removeprefix("handle")),
        "nvmlDeviceGetHandleByIndex": lambda index: f"handle{index}",
        "nvmlSystemGetDriverVersion": lambda: "580.65.06",
        "nvmlDeviceGetEnforcedPowerLimit": lambda handle: 700_000,
    }.items():
        monkeypatch.setattr(pynvml, name, fn)


def test_the_check_reads_the_gpu_torch_uses_found_by_uuid_never_index_0(monkeypatch, capsys):
    fake_gpu(monkeypatch, {b"GPU-bbbb": 0, b"GPU-aaaa": 2})  # NVML's 0 is another card
    identify.main()
    found = json.loads(capsys.readouterr().out)
    assert found["nvml_index"] == 2 and found["uuid"] == "GPU-aaaa" and found["MIG"] == "no"
    assert found["metered as the job's own"] == "yes" and found["power_limit_w"] == 700.0
    fake_gpu(monkeypatch, {b"GPU-bbbb": 0})  # NVML does not know torch's GPU: no index at all
    identify.main()
    found = json.loads(capsys.readouterr().out)
    assert found["nvml_index"] is None and "power_limit_w" not in found and found["MIG"].startswith("unknown")
    assert found["metered as the job's own"].startswith("no: cuda:0: NVML knows no GPU or MIG instance")


def test_waiting_for_the_gpu_says_what_is_still_there_or_that_nvml_failed(monkeypatch):
    """NVML's view of a GPU this machine lacks is faked behind pynvml's own functions."""
    import pynvml

    listed = [[SimpleNamespace(pid=4242)]]
    for name, fn in {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetHandleByIndex": lambda index: f"handle{index}",
        "nvmlDeviceGetComputeRunningProcesses": lambda handle: listed[-1],
    }.items():
        monkeypatch.setattr(pynvml, name, fn)
    assert "compute processes [4242] 0 s after the step ended" in wait_for_gpu(3, max_s=0.3)
    listed.append([])  # the step's process has gone
    assert wait_for_gpu(3, max_s=0.3) is None

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert wait_for_gpu(3).startswith("could not tell whether the GPU was free after the step: NVML:")


def test_a_second_check_into_the_same_folder_starts_from_a_fresh_store(tmp_path):
    earlier = {"machine": {}, "budget_s": 420, "steps": []}
    (tmp_path / "report.json").write_text(json.dumps(earlier))
    for name in ("mlflow.db", "report.md", "notes.txt"):
        (tmp_path / name).write_text("from before")
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "counter.csv").write_text("unix_s,energy_mj,power_w\n")
    _fresh(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "notes.txt"]  # the user's own file stays


def test_a_folder_no_check_wrote_is_refused_and_left_untouched(tmp_path):
    """`bash bench/gpu_check.sh --cpu .` from the repository root must not delete the user's store."""
    (tmp_path / "mlflow.db").write_text("the user's runs")
    done = gpu_check("--cpu", str(tmp_path), "--steps", "idle")
    assert done.returncode == 2 and f"OUT {tmp_path} holds mlflow.db, but no report.json" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]
    assert (tmp_path / "mlflow.db").read_text() == "the user's runs"
