"""`python -m bench.gpu [--cpu] [--steps A,B] [--budget-s S] [OUT]` (through bench/gpu_check.sh): the GPU
proof, step by step, in order of value (bench/gpu/plan.py).

Each step runs in a process group of its own under its own limit; when it ends, for whatever reason,
anything left in its group is ended, and on a GPU the next step waits until NVML lists no compute
process. OUT receives `report.md` and `report.json` (rewritten after every step), `mlflow.db` (every
job's run), `traces/` (the counter check's recording) and `logs/<step>.log`. The exit status is the
number of failed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.gpu import report
from bench.gpu.context import ROOT, SHAPES, Context
from bench.gpu.identify import versions
from bench.gpu.plan import Plan, add_arguments, choose

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu"
TERM_GRACE_S = 5.0  # SIGTERM, then SIGKILL for what is still there
GPU_RELEASE_S = 15.0  # the longest the next step waits for the GPU to list no compute process


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies waiting for their parent do not count)."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def end_group(pgid: int, grace_s: float = TERM_GRACE_S) -> list[int]:
    """SIGTERM to every process of the group, SIGKILL to those left after `grace_s`; returns the pids
    that had to be ended (empty when the step left nothing behind)."""
    left = group_members(pgid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_members(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return left


def run_in_group(command: list[str], log_path: Path, timeout_s: float) -> tuple[int | None, list[int]]:
    """(exit status, or None when the limit stopped it; the pids its group still held at the end)."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            status = None
        ended = end_group(process.pid)  # a step's children (the counter recorder...) end with it
        process.wait()
    return status, ended


def gpu_processes(nvml_index: int) -> list[int]:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
        return [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
    finally:
        pynvml.nvmlShutdown()


def wait_for_gpu(nvml_index: int, max_s: float = GPU_RELEASE_S) -> str | None:
    """None once NVML lists no compute process on the GPU; else a note naming what is still there.
    In a container NVML lists host pids, so ours cannot be told from others': any process counts."""
    deadline = time.monotonic() + max_s
    while (pids := gpu_processes(nvml_index)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return (
        f"the GPU still listed compute processes {pids} {max_s:.0f} s after the step ended" if pids else None
    )


def identify(cpu: bool, shape_profile: str) -> tuple[dict[str, str], int | None]:
    """The machine, and the NVML index of the GPU torch uses (None when its UUID did not resolve).
    On a GPU this runs in a process of its own, so no CUDA context of ours is left open afterwards."""
    if cpu:
        simulated = f"none: CPU rehearsal, runs labelled hardware={shape_profile} (SIMULATED)"
        return {"python": platform.python_version(), **versions(), "gpu": simulated}, None
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu.identify"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        return {"gpu": "not identified: " + " | ".join(done.stderr.strip().splitlines()[-3:])}, None
    found = json.loads(done.stdout)
    index = found.pop("nvml_index")
    return {k: str(v) for k, v in found.items()}, index


def _outcome(
    name: str,
    plan: Plan,
    status: int | None,
    seconds: float,
    result_path: Path,
    log_path: Path,
    ended: list[int],
) -> report.StepOutcome:
    outcome = report.StepOutcome(name, plan.limit_s(name), seconds=round(seconds, 1))
    found = json.loads(result_path.read_text()) if result_path.exists() else {}
    outcome.figures, outcome.notes = found.get("figures", []), found.get("notes", [])
    failures = found.get("failures", [])
    if status is None:
        outcome.status = (
            f"failed (stopped at its {plan.limit_s(name):.0f}-s limit; the figures it finished are kept)"
        )
    elif status != 0:
        outcome.status = f"failed (exit status {status})"
        outcome.notes.append(
            "last lines of its log: " + " | ".join(log_path.read_text().strip().splitlines()[-3:])
        )
    elif failures:
        outcome.status = f"failed ({', '.join(failures)})"
    elif found.get("skipped"):
        outcome.status = f"skipped: {found['skipped']}"
    else:
        outcome.status = "ok"
    if status is not None and ended:
        outcome.notes.append(f"processes it left running were ended: {ended}")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cpu", action="store_true", help="rehearse on the CPU with a simulated GPU")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        plan = choose(args.steps, args.budget_s)
    except ValueError as error:
        parser.exit(2, f"gpu check: error: {error}\n")
    start = time.monotonic()  # bench/gpu_check.sh has printed the plan (python -m bench.gpu.plan)
    shape = SHAPES["cpu" if args.cpu else "gpu"]
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    machine, nvml_index = identify(args.cpu, shape.simulated_profile)
    work = Path(tempfile.mkdtemp(prefix="ecopipe-gpu-check-"))
    base = " ".join(Context(shape, work, out, nvml_index).base())
    steps = [report.StepOutcome(name, plan.limit_s(name)) for name in plan.steps]
    report.write(out, machine, steps, args.cpu, base, plan.budget_s)
    for i, name in enumerate(plan.steps):
        left = plan.budget_s - (time.monotonic() - start)
        if left < 10:
            steps[i].status = report.NO_TIME_LEFT
            continue
        print(f"gpu check: {name} (limit {min(plan.limit_s(name), left):.0f} s) ...", flush=True)
        result_path, log_path = work / f"{name}.json", out / "logs" / f"{name}.log"
        command = [sys.executable, "-m", "bench.gpu.steps", name, "--shape", shape.name, "--work", str(work),
                   "--out", str(out), "--result", str(result_path)]  # fmt: skip
        if nvml_index is not None:
            command += ["--nvml-index", str(nvml_index)]
        began = time.monotonic()
        status, ended = run_in_group(command, log_path, min(plan.limit_s(name), left))
        steps[i] = _outcome(name, plan, status, time.monotonic() - began, result_path, log_path, ended)
        if nvml_index is not None and (busy := wait_for_gpu(nvml_index)):
            steps[i].notes.append(busy)
        report.write(out, machine, steps, args.cpu, base, plan.budget_s)
        print(f"gpu check: {name}: {steps[i].status} ({steps[i].seconds} s)", flush=True)
    print(report.write(out, machine, steps, args.cpu, base, plan.budget_s))
    sys.exit(sum(step.failed for step in steps))


if __name__ == "__main__":
    main()
