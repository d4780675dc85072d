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
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.gpu import report
from bench.gpu.context import ROOT, SHAPES, Context
from bench.gpu.plan import add_arguments, choose

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu"
TERM_GRACE_S = 5.0  # SIGTERM, then SIGKILL for what is still there
REAP_S = 10.0  # a leader that outlives SIGKILL this long is stuck in the kernel (a hung driver call)
GPU_RELEASE_S = 15.0  # the longest the next step waits for the GPU to list no compute process
# What a previous check left in OUT: replaced, so a second call never reports the first one's runs.
PREVIOUS = ("report.md", "report.json", "mlflow.db", "mlflow.db.lock", "mlartifacts", "traces", "logs")


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
    """(exit status, or None when the limit stopped it; the pids its group still held at the end).

    The group is ended however this returns: at the limit, at the step's own end (a child it left), or
    when the check itself is interrupted (Ctrl-C, SIGTERM), so no step outlives the check on the GPU.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        status: int | None = None
        ended: list[int] = []
        try:
            status = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            ended = end_group(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=REAP_S)
    return status, ended


def wait_for_gpu(nvml_index: int, max_s: float = GPU_RELEASE_S) -> str | None:
    """None once NVML lists no compute process on the GPU; else a note saying what is still there.
    In a container NVML lists host pids, so ours cannot be told from others': any process counts."""
    import pynvml

    try:
        pynvml.nvmlInit()  # once: without persistence mode an init can take seconds
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
        deadline = time.monotonic() + max_s
        while pids := [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]:
            if time.monotonic() > deadline:
                return f"the GPU still listed compute processes {pids} {max_s:.0f} s after the step ended"
            time.sleep(0.2)
        return None
    except pynvml.NVMLError as error:
        return f"could not tell whether the GPU was free after the step: NVML: {error}"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def identify(cpu: bool, shape_profile: str) -> tuple[dict[str, str], int | None]:
    """The machine, and the NVML index of the GPU torch uses (None when its UUID did not resolve).
    On a GPU this runs in a process of its own, so no CUDA context of ours is left open afterwards."""
    if cpu:
        from ecopipe.hardware import environment

        simulated = f"none: CPU rehearsal, runs labelled hardware={shape_profile} (SIMULATED)"
        return {**{k: str(v) for k, v in environment().items()}, "gpu": simulated}, None
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.gpu.identify"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        found = json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        return {"gpu": f"not identified: {type(error).__name__}: {error}"}, None
    if found is None:
        return {"gpu": "not identified: " + " | ".join(done.stderr.strip().splitlines()[-3:])}, None
    index = found.pop("nvml_index")
    return {k: str(v) for k, v in found.items()}, index


def _outcome(
    name: str,
    limit_s: float,
    status: int | None,
    seconds: float,
    result_path: Path,
    log_path: Path,
    ended: list[int],
) -> report.StepOutcome:
    """What a step's process left: its saved figures and notes, and a status that says how it ended.
    `limit_s` is the limit it ran under: its own, or less where the budget had less left."""
    outcome = report.StepOutcome(name, limit_s, seconds=round(seconds, 1))
    found = json.loads(result_path.read_text()) if result_path.exists() else {}
    outcome.figures, outcome.notes = found.get("figures", []), found.get("notes", [])
    failures = found.get("failures", [])
    if status is None:
        outcome.status = f"failed (stopped at its {limit_s:.0f}-s limit; the figures it finished are kept)"
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


def _written_by_a_check(out: Path) -> bool:
    try:
        return {"machine", "budget_s", "steps"} <= json.loads((out / "report.json").read_text()).keys()
    except (OSError, ValueError, AttributeError):
        return False


def _fresh(out: Path) -> None:
    """OUT ready for this check: what an earlier check wrote there is removed (its store would be
    reported as this check's), and a folder holding those names that no check wrote is refused (OUT=.
    from the repository root would otherwise delete the user's own mlflow.db)."""
    found = [name for name in PREVIOUS if (out / name).exists()]
    if found and not _written_by_a_check(out):
        raise ValueError(
            f"OUT {out} holds {', '.join(found)}, but no report.json of an earlier GPU check: give the "
            "check an empty folder, or one an earlier check wrote (its files are then replaced)"
        )
    for name in found:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    (out / "logs").mkdir(parents=True)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_in_group, which ends the running step's group


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
    signal.signal(signal.SIGTERM, _stop)
    shape = SHAPES["cpu" if args.cpu else "gpu"]
    out = args.out.resolve()
    try:
        _fresh(out)
    except ValueError as error:
        parser.exit(2, f"gpu check: error: {error}\n")
    machine, nvml_index = identify(args.cpu, shape.simulated_profile)
    work = Path(tempfile.mkdtemp(prefix="ecopipe-gpu-check-"))
    base = shlex.join(Context(shape, work, out, nvml_index).base())
    steps = [report.StepOutcome(name, plan.limit_s(name)) for name in plan.steps]
    report.write(out, machine, steps, args.cpu, base, plan.budget_s)
    for i, name in enumerate(plan.steps):
        left = plan.budget_s - (time.monotonic() - start)
        if left < 10:
            steps[i].status = report.NO_TIME_LEFT
            continue
        limit_s = min(plan.limit_s(name), left)
        print(f"gpu check: {name} (limit {limit_s:.0f} s) ...", flush=True)
        result_path, log_path = work / f"{name}.json", out / "logs" / f"{name}.log"
        command = [sys.executable, "-m", "bench.gpu.steps", name, "--shape", shape.name, "--work", str(work),
                   "--out", str(out), "--result", str(result_path)]  # fmt: skip
        command += ["--check-pid", str(os.getpid())]
        if nvml_index is not None:
            command += ["--nvml-index", str(nvml_index)]
        began = time.monotonic()
        status, ended = run_in_group(command, log_path, limit_s)
        steps[i] = _outcome(name, limit_s, status, time.monotonic() - began, result_path, log_path, ended)
        if nvml_index is not None and (busy := wait_for_gpu(nvml_index)):
            steps[i].notes.append(busy)
        report.write(out, machine, steps, args.cpu, base, plan.budget_s)
        print(f"gpu check: {name}: {steps[i].status} ({steps[i].seconds} s)", flush=True)
    print(report.write(out, machine, steps, args.cpu, base, plan.budget_s))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(sum(step.failed for step in steps))


if __name__ == "__main__":
    main()
