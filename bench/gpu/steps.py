"""The GPU check's steps. Each runs in a process group of its own (`python -m bench.gpu.steps NAME ...`),
so a hang or a broken CUDA context costs one step, a timeout ends everything the step started, and the
idle step sees a GPU with no context of ours open.

A step adds figures (name, value, unit, the command that produced it) and notes to its StepResult, which
is saved after each one: a step stopped at its limit still reports what it finished. The `cpu` shape
rehearses the same steps on the CPU with the simulated GPU sensor and shrunk models, so the script
itself is tested on every change; its figures say SIMULATED and prove nothing about a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.gpu.context import (
    ROOT,
    SHAPES,
    SWEEP_EXPERIMENT,
    Context,
    StepResult,
    command,
    metric_history,
    run_job,
)
from bench.gpu.counter import (
    POWER_FIELD_TOLERANCE,
    SAME_COUNTER_TOLERANCE,
    compare,
    nvml_reader,
    simulated_reader,
)
from ecopipe.monitor.settle import SETTLE_TOLERANCE, SETTLE_WINDOWS, settle
from ecopipe.names import Tag, TagFamily


def _source(tags: dict[str, str], component: str) -> str | None:
    """A job run's energy source for one component, as its tags say."""
    return tags.get(TagFamily.ENERGY_SOURCE.of(component))


def _counter_mj(ctx: Context) -> Callable[[], float]:
    read, _ = simulated_reader(ctx.shape.fake_gpu_watts) if ctx.simulated else nvml_reader(ctx.needs_gpu())
    return lambda: read()[0]


# --- counter: the job's GPU energy against two NVML signals read by a second process -----------------------


def _start_recorder(ctx: Context, trace: Path) -> subprocess.Popen:
    recorder = [sys.executable, "-m", "bench.gpu.counter", "--out", str(trace), "--hz", "50"]
    if ctx.simulated:
        recorder += ["--fake-watts", str(ctx.shape.fake_gpu_watts)]
    else:
        recorder += ["--index", str(ctx.needs_gpu())]
    process = subprocess.Popen(recorder, cwd=ROOT)  # in this step's process group: a timeout ends it too
    while not trace.exists() or trace.read_text().count("\n") < 3:
        if process.poll() is not None:
            raise RuntimeError(f"the counter recorder exited with status {process.returncode}")
        time.sleep(0.05)
    return process


def counter(ctx: Context, result: StepResult) -> None:
    trace_path = ctx.out / "traces" / "counter.csv"
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    process = _start_recorder(ctx, trace_path)
    try:
        metrics, tags, run_id, cmd = run_job(
            ctx,
            f"model={ctx.shape.counter_model}",
            f"precision={ctx.shape.float_precision}",
            *ctx.shape.counter_overrides,
            "monitor.gpu_sensor=counter",
        )
        time.sleep(0.1)  # the trace must extend past the last edge
    finally:
        process.terminate()
        process.wait(timeout=10)
    field = trace_path.with_suffix(".field").read_text()
    result.note(f"job run {run_id}; its GPU source: {_source(tags, 'gpu')}; power field: {field}")
    trials = compare(
        pd.read_csv(trace_path),
        metric_history(ctx, run_id, "trial_start_unix_s"),
        metric_history(ctx, run_id, "trial_end_unix_s"),
        metric_history(ctx, run_id, "trial_energy_j.gpu"),
    )
    for t in trials:
        n = t.trial + 1
        result.figure(f"trial {n}: job GPU energy (its counter)", t.job_j, "J", cmd)
        result.figure(f"trial {n}: counter, second process, same edges", t.counter_j, "J")
        result.figure(f"trial {n}: power field integrated, second process", t.power_field_j, "J")
        result.figure(f"trial {n}: job / counter", t.job_vs_counter)
        result.figure(f"trial {n}: power field / counter", t.power_field_vs_counter)
        for problem in t.problems():
            result.fail(f"trial {n}", problem)
    result.figure("job's idle baseline, GPU", metrics.get("idle_power_w.gpu", float("nan")), "W")
    result.note(
        "a consistency check between two NVML signals of one board (units, device, window edges, a "
        "counter that moves), not an external meter; tolerances: job vs counter "
        f"{100 * SAME_COUNTER_TOLERANCE:.0f}% (one counter, read by two processes), power field vs "
        f"counter {100 * POWER_FIELD_TOLERANCE:.0f}% (an earlier probe on an H100 saw the field's "
        "integral about 9% below the counter)"
    )


# --- idle: power settles, without and then with a CUDA context ---------------------------------------------


def idle(ctx: Context, result: StepResult) -> None:
    read = _counter_mj(ctx)
    for label in ("no CUDA context", "CUDA context open"):
        if label == "CUDA context open" and not ctx.simulated:
            import torch

            torch.zeros(1, device="cuda")
            torch.cuda.synchronize()
        found = settle(lambda: read() / 1000, ctx.shape.idle_window_s, ctx.shape.idle_max_s)
        unsettled = "" if found.settled else f" (NOT settled: mean of the last {SETTLE_WINDOWS} windows)"
        result.figure(f"idle power, {label}{unsettled}", found.settled_w, "W")
        result.figure(f"idle power, {label}: seconds to settle", round(found.seconds, 1), "s")
        if not found.settled:
            result.note(
                f"{label}: not flat after {found.seconds:.0f} s: "
                + ", ".join(f"{w:.1f} W" for w in found.watts)
            )
    result.note(
        f"from the counter, {ctx.shape.idle_window_s:g}-s windows until {SETTLE_WINDOWS} lie within "
        f"{100 * SETTLE_TOLERANCE:.0f}% of their mean (at most {ctx.shape.idle_max_s:g} s each); the "
        "job's own baseline is in `counter`"
    )


# --- headline, precisions, engines -------------------------------------------------------------------------


def headline(ctx: Context, result: StepResult) -> None:
    metrics, tags, _, cmd = run_job(ctx, f"model={ctx.shape.small}", f"precision={ctx.shape.float_precision}")
    result.figure("weights hold", tags[Tag.DTYPE], "", cmd)
    result.figure("energy per 1,000 tokens", metrics["energy_per_1k_tokens_gross_j"], "J")
    result.figure("tokens/s", metrics["tokens"] / metrics["window_s"], "tokens/s")
    result.note(
        f"hardware {tags.get(Tag.HARDWARE)}; energy sources: gpu {_source(tags, 'gpu')}, "
        f"cpu {_source(tags, 'cpu')}, ram {_source(tags, 'ram')}"
    )
    if why := tags.get(TagFamily.ENERGY_UNMETERED.of("gpu")):
        result.fail("GPU energy", f"not metered as the job's own: {why}")


def precisions(ctx: Context, result: StepResult) -> None:
    from ecopipe.config import ConfigError

    for precision in ("fp32", "fp16", "bf16", "int8", "int4"):
        try:
            metrics, tags, _, cmd = run_job(ctx, f"model={ctx.shape.small}", f"precision={precision}")
        except ConfigError as refusal:  # the job says why this precision cannot run here: a finding
            result.note(f"{precision}: cannot run: {refusal}")
            continue
        except Exception as error:  # one line each: the next precision still runs
            result.fail(precision, f"{type(error).__name__}: {error}")
            continue
        result.figure(f"{precision}: weights hold", tags[Tag.DTYPE], "", cmd)
        result.figure(f"{precision}: energy per 1,000 tokens", metrics["energy_per_1k_tokens_gross_j"], "J")


def copy_bandwidth(device: str, megabytes: int = 1024, repeats: int = 10) -> float:
    """Bytes/s a device-to-device copy moves, counting bytes read and written (as the H200's 4.8 TB/s)."""
    import torch

    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    sync()
    return 2 * source.numel() * repeats / (time.perf_counter() - start)


def _device_name(ctx: Context) -> str:
    import torch

    return torch.cuda.get_device_name(0) if ctx.shape.device == "cuda" else "cpu"


def engines(ctx: Context, result: StepResult) -> None:
    from bench.gpu_efficiency import rated_bandwidth

    measured = copy_bandwidth(ctx.shape.device)
    rated = rated_bandwidth(_device_name(ctx))
    result.figure("copy bandwidth, measured", measured / 1e12, "TB/s")
    if rated:
        result.figure("HBM bandwidth, rated", rated / 1e12, "TB/s")
    bytes_per_weight = {"fp32": 4, "fp16": 2, "bf16": 2}[ctx.shape.float_precision]
    for batch in ctx.shape.batches:  # eager against compiled at batch 1 first: a cut-off keeps that pair
        for engine in ("eager", "compiled"):
            label = f"{engine}, batch {batch}"
            try:
                metrics, _, _, cmd = run_job(
                    ctx,
                    f"model={ctx.shape.engines_model}",
                    f"precision={ctx.shape.float_precision}",
                    f"engine={engine}",
                    f"batch_size={batch}",
                    f"dataset.limit={max(batch, 2)}",
                )
            except Exception as error:
                result.fail(label, f"{type(error).__name__}: {error}")
                continue
            tokens_per_s = metrics["tokens"] / metrics["window_s"]
            result.figure(f"{label}: tokens/s", tokens_per_s, "tokens/s", cmd)
            result.figure(f"{label}: energy per token", metrics["energy_per_1k_tokens_gross_j"] / 1000, "J")
            if batch == 1:  # each new token reads every weight once: tokens/s <= bandwidth / weight bytes
                weight_bytes = metrics["parameters"] * bytes_per_weight
                result.figure(
                    f"{label}: share of the measured-bandwidth bound", tokens_per_s * weight_bytes / measured
                )
                if rated:
                    result.figure(
                        f"{label}: share of the rated-bandwidth bound", tokens_per_s * weight_bytes / rated
                    )


# --- sweep: the GPU column of a cross-hardware table -------------------------------------------------------


def sweep_overrides(ctx: Context) -> list[str]:
    """The sweep's grid, which a CPU runs unchanged but for where it runs (`cpu_twin`)."""
    return [
        "-m",
        f"model={ctx.shape.sweep_models}",
        f"precision={ctx.shape.sweep_precisions}",
        *ctx.grid(),
        f"tracking.experiment={SWEEP_EXPERIMENT}",
    ]


def cpu_twin(ctx: Context, store: str = "sqlite:///cpu.db") -> str:
    """The command that runs the same grid on a CPU, into its own store, for the merged table."""
    return command([*sweep_overrides(ctx), "hardware.device=cpu", f"tracking.uri={store}"])


def merge_command(ctx: Context, other: str = "sqlite:///cpu.db") -> str:
    return (
        f"python -m ecopipe.aggregate --tracking-uri {ctx.store} --tracking-uri {other} "
        f"--experiment {SWEEP_EXPERIMENT}"
    )


def sweep(ctx: Context, result: StepResult) -> None:
    """A 4-job multirun (2 models x 2 precisions) and its aggregation, in a process of its own."""
    from mlflow.tracking import MlflowClient

    folder = ctx.work / "sweep"
    args = [
        *sweep_overrides(ctx),
        *ctx.device_overrides(),
        f"tracking.uri={ctx.store}",
        f"hydra.sweep.dir={folder}",
    ]
    done = subprocess.run([sys.executable, "-m", "ecopipe", *args], cwd=ROOT, capture_output=True, text=True)
    client = MlflowClient(ctx.store)
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    children = [r for r in runs if Tag.PARENT_RUN in r.data.tags]
    finished = sum(r.info.status == "FINISHED" for r in children)
    tables = sorted(p.name for p in (folder / "aggregate").rglob("*.csv"))  # tables/, data/...
    result.figure("jobs FINISHED", f"{finished} of {len(children)}", "", command(args))
    result.figure("aggregate tables", len(tables), "CSV files")
    result.figure("sweep exit status", done.returncode)
    if done.returncode != 0 or finished != 4 or not tables:
        result.fail("sweep", "sweep output, last lines: " + " | ".join(done.stderr.strip().splitlines()[-5:]))
    result.note(
        f"the same grid on a CPU, for a table with both columns: `{cpu_twin(ctx)}`, "
        f"then `{merge_command(ctx)}`"
    )


# --- rapl: the one place where an estimate meets a counter -------------------------------------------------


def rapl(ctx: Context, result: StepResult) -> None:
    from ecopipe.sensors.base import Component, SensorUnavailable
    from ecopipe.sensors.rapl import POWERCAP_ROOT, discover_rapl_zones

    try:
        packages = [z for z in discover_rapl_zones() if z.component is Component.CPU]
    except SensorUnavailable as error:
        packages, why = [], str(error)
    else:
        why = f"no RAPL package zone under {POWERCAP_ROOT}"
    if not packages:
        result.skip(f"no readable RAPL on this host ({why}): no counter to set the CPU estimate against")
        return
    base = [*ctx.grid(), "hardware.device=cpu", f"model={ctx.shape.small}", "precision=fp32"]
    base.append("model.max_new_tokens=8")  # two CPU jobs within the step's limit, as busy as longer ones
    per_1k, cpu = {}, "energy_per_1k_gross_j.cpu"
    for label, rapl_on in (("RAPL", "true"), ("estimate (RAPL hidden)", "false")):
        metrics, tags, _, cmd = run_job(ctx, f"monitor.rapl={rapl_on}", base=base)
        per_1k[label] = metrics
        result.figure(f"{label}: CPU energy per 1,000 inferences", metrics[cpu], "J", cmd)
        result.note(f"{label}: cpu source {_source(tags, 'cpu')}, ram source {_source(tags, 'ram')}")
    counter, estimate = per_1k["RAPL"], per_1k["estimate (RAPL hidden)"]
    result.figure("estimate / RAPL", estimate[cpu] / counter[cpu])
    low, high = estimate.get(f"{cpu}_low", estimate[cpu]), estimate.get(f"{cpu}_high", estimate[cpu])
    result.figure("the estimate's band covers RAPL", "yes" if low <= counter[cpu] <= high else "NO", "")
    share = counter.get("job_cpu_share", float("nan"))
    result.note(
        f"RAPL charged at the job's share of busy CPU time ({share:.0%}); the estimate's band "
        f"{low:.4g}-{high:.4g} J per 1,000 (its coefficients' range and the trials' CI)"
    )


# --- pytest ------------------------------------------------------------------------------------------------


def cuda_tests(ctx: Context, result: StepResult) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {
        k.rstrip("s"): int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary)
    }
    for kind in ("passed", "failed", "skipped", "error"):
        result.figure(kind, counts.get(kind, 0), "tests", "python -m pytest -m cuda tests")
    if done.returncode != 0:
        result.fail("pytest", "last lines: " + " | ".join(done.stdout.strip().splitlines()[-8:]))


STEPS: dict[str, Callable[[Context, StepResult], None]] = {
    "counter": counter,
    "idle": idle,
    "headline": headline,
    "precisions": precisions,
    "engines": engines,
    "sweep": sweep,
    "rapl": rapl,
    "pytest": cuda_tests,
}


def _end_with_the_check(check_pid: int, grace_s: float = 5.0) -> None:
    """When the check that started this step dies (SIGKILL at a device's time limit), end this step's
    whole process group: it runs in a session of its own, so nothing else would stop it on the GPU."""
    while os.getppid() == check_pid:
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # a job's SIGTERM handler marks its run as stopped
        os.killpg(os.getpgrp(), sig)
        time.sleep(grace_s)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run one step of the GPU check; its result goes to --result."
    )
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--shape", choices=SHAPES, default="gpu")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--nvml-index", type=int, help="the GPU torch uses, resolved through its UUID")
    # Given, not read here: a check killed while this process still imports must not be missed.
    parser.add_argument("--check-pid", type=int, required=True, help="the check that started this step")
    args = parser.parse_args()
    threading.Thread(target=_end_with_the_check, args=(args.check_pid,), daemon=True).start()
    result = StepResult(args.result)
    result.save()
    STEPS[args.step](Context(SHAPES[args.shape], args.work, args.out, args.nvml_index), result)


if __name__ == "__main__":
    main()
