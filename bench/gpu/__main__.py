"""`python -m bench.gpu [--cpu] [OUT]` (through bench/gpu_check.sh): the GPU proof, step by step.

Runs every step of `bench.gpu.steps` in a process of its own, within one time budget, and writes
into OUT: `report.md` (printed too), `report.json` (the same figures), `mlflow.db` (every job's run)
and `gpu_check.log` (each step's output). A failing step is reported and the next one runs; the exit
status is the number of failed steps.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gpu.steps import ROOT, SHAPES, STEPS, Context

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu"
# Seconds each step may take at most on the GPU (the rehearsal's are a fraction); the whole check
# must end within 10 minutes on a bare machine, installation included.
STEP_LIMIT_S = {
    "idle": 40,
    "counter": 150,
    "polling": 120,
    "precisions": 150,
    "headline": 150,
    "sweep": 150,
    "engines": 240,
    "pytest": 150,
}
PACKAGES = ("torch", "transformers", "torchao", "mlflow", "hydra-core", "nvidia-ml-py", "pandas", "numpy")


def machine(cpu: bool) -> dict[str, str]:
    """What ran the check, read without opening a CUDA context (the idle step must see none)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    info = {"python": platform.python_version(), "host": platform.node(), **versions}
    if cpu:
        return info | {"gpu": "none: CPU rehearsal with a SIMULATED GPU (monitor.fake_gpu_watts)"}
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        info |= {
            "gpu": str(pynvml.nvmlDeviceGetName(handle)),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "power_limit_w": str(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
        }
    except Exception as error:  # reported, not fatal: the steps will fail with their own reasons
        info["gpu"] = f"NVML unusable: {error}"
    return info


def run_step(name: str, shape: str, work: Path, timeout_s: float) -> dict:
    result_path, log_path = work / f"{name}.json", work / f"{name}.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        command = [sys.executable, "-m", "bench.gpu.steps", name, "--shape", shape, "--work", str(work)]
        try:
            done = subprocess.run(
                [*command, "--result", str(result_path)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
            )
            status = "ok" if done.returncode == 0 else f"failed (exit status {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"failed (stopped after {timeout_s:.0f} s)"
    outcome = {"step": name, "seconds": round(time.perf_counter() - start, 1)}
    if result_path.exists():
        outcome |= json.loads(result_path.read_text())
        if outcome["failures"] and status == "ok":
            status = f"failed ({', '.join(outcome['failures'])})"
    else:
        tail = log_path.read_text().strip().splitlines()[-3:]
        outcome |= {"figures": [], "notes": [" | ".join(tail)], "failures": [name]}
    return outcome | {"status": status}


def render(info: dict[str, str], steps: list[dict], cpu: bool, base: str) -> str:
    """The report in Markdown; each job's command is shown with the overrides all jobs share as $BASE."""
    title = (
        "GPU check: CPU rehearsal (SIMULATED GPU: these figures prove nothing about a GPU)"
        if cpu
        else "GPU check"
    )
    lines = [f"# {title}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in info.items()), ""]
    lines += [f"Overrides every job shares, `$BASE`: `{base}`", ""]
    for step in steps:
        lines += [f"## {step['step']}: {step['status']} ({step['seconds']} s)", ""]
        if step["figures"]:
            lines += ["| figure | value | unit |", "|---|---:|---|"]
            for figure in step["figures"]:
                value = figure["value"]
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                lines.append(f"| {figure['name']} | {shown} | {figure['unit']} |")
            commands = dict.fromkeys(
                f["command"].replace(base, "$BASE") for f in step["figures"] if f["command"]
            )
            lines += ["", *(f"- `{c}`" for c in commands)]
        lines += [*(f"- {note}" for note in step["notes"]), ""]
    failed = sum(step["status"] != "ok" for step in steps)
    lines.append(f"**{len(steps) - failed} of {len(steps)} steps passed.**")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cpu", action="store_true", help="rehearse on the CPU with a simulated GPU")
    parser.add_argument("--budget-s", type=float, default=540.0, help="all steps together")
    parser.add_argument("--steps", default=",".join(STEPS), help="a comma-separated subset, in run order")
    args = parser.parse_args()
    chosen = [name for name in STEPS if name in args.steps.split(",")]
    shape = "cpu" if args.cpu else "gpu"
    info = machine(args.cpu)
    work = Path(tempfile.mkdtemp(prefix="ecopipe-gpu-check-"))
    deadline = time.monotonic() + args.budget_s
    steps = []
    for name in chosen:
        left = deadline - time.monotonic()
        if left < 10:
            steps.append(
                {"step": name, "status": "failed (no time left)", "seconds": 0, "figures": [], "notes": []}
            )
            continue
        print(f"gpu check: {name} ...", flush=True)
        steps.append(run_step(name, shape, work, min(STEP_LIMIT_S[name], left)))
        print(f"gpu check: {name}: {steps[-1]['status']} ({steps[-1]['seconds']} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = render(info, steps, args.cpu, " ".join(Context(SHAPES[shape], work).base()))
    (args.out / "report.md").write_text(report)
    (args.out / "report.json").write_text(
        json.dumps({"machine": info, "steps": steps}, indent=1, default=str)
    )
    if (work / "mlflow.db").exists():
        shutil.copy(work / "mlflow.db", args.out / "mlflow.db")
    with (args.out / "gpu_check.log").open("w") as log:
        for name in chosen:
            if (work / f"{name}.log").exists():
                log.write(f"===== {name}\n{(work / f'{name}.log').read_text()}\n")
    shutil.rmtree(work, ignore_errors=True)
    print(report)
    sys.exit(sum(step["status"] != "ok" for step in steps))


if __name__ == "__main__":
    main()
