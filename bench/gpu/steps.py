"""The GPU check's steps. Each runs in a process of its own (`python -m bench.gpu.steps NAME ...`), so a
hang or a broken CUDA context costs one step, and the idle step sees a GPU with no context open.

Every step returns figures (name, value, unit, the command that produced it) and notes. The `cpu`
shape rehearses the same steps on the CPU with the simulated GPU sensor and shrunk models, so the
script itself is tested on every change; its figures say SIMULATED and prove nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from bench.gpu.counter import compare, nvml_counter_mj, simulated_counter_mj

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Shape:
    """Models, windows and batches of one run of the check."""

    name: str
    device: str  # hardware.device of every job
    fake_gpu_watts: float | None  # the CPU rehearsal's simulated GPU; None on a real one
    overrides: tuple[str, ...]  # shared by every job: data, window lengths, shrinking on the CPU
    counter_overrides: tuple[str, ...]  # the independent-counter check: >= 3 trials of >= 5 s on a GPU
    sweep_precisions: str
    float_precision: str  # counter check and engines: fp16 on a GPU, fp32 on the CPU
    batches: tuple[int, ...]
    idle_s: float  # each idle reading of the idle step
    # The same models in both shapes (the CPU rehearsal shrinks them with `overrides`).
    big: str = "opt-1.3b"  # counter check and engines
    small: str = "opt-125m"  # precisions
    headline: str = "opt-2.7b"  # the mission's own example, with int8
    sweep_models: str = "opt-125m,opt-350m"


GPU = Shape(
    name="gpu",
    device="cuda",
    fake_gpu_watts=None,
    overrides=(
        "dataset.limit=8",
        "dataset.seq_len=64",
        "model.max_new_tokens=32",
        "monitor.trials=2",
        "monitor.min_window_s=2",
        "monitor.idle_s=2",
    ),
    counter_overrides=("batch_size=8", "monitor.trials=3", "monitor.min_window_s=5"),
    sweep_precisions="fp16,bf16",
    float_precision="fp16",
    batches=(1, 8),
    idle_s=3.0,
)
# Every OPT architecture shrunk alike: the rehearsal checks the script's plumbing, not the models.
_SHRINK = "+model.config_overrides={hidden_size:128,num_hidden_layers:1,num_attention_heads:2,ffn_dim:256,word_embed_proj_dim:128}"  # noqa: E501
CPU = Shape(
    name="cpu",
    device="cpu",
    fake_gpu_watts=300.0,
    overrides=(
        _SHRINK,
        "dataset.limit=2",
        "dataset.seq_len=8",
        "model.max_new_tokens=4",
        "monitor=quick",
        "monitor.trials=2",
        "monitor.min_window_s=0.1",
        "monitor.idle_s=0.1",
        "monitor.warmup_batches=1",
    ),
    counter_overrides=("batch_size=2", "monitor.trials=3", "monitor.min_window_s=0.3"),
    sweep_precisions="fp32,int8",
    float_precision="fp32",
    batches=(1,),  # one shape to compile: torch.compile takes ~20 s per shape on 2 CPU cores
    idle_s=0.2,
)
SHAPES = {shape.name: shape for shape in (GPU, CPU)}


@dataclass
class Figure:
    name: str
    value: float | str
    unit: str = ""
    command: str = ""


@dataclass
class StepResult:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # parts that failed; the step fails if any


@dataclass(frozen=True)
class Context:
    shape: Shape
    work: Path  # scratch folder: the MLflow store, traces, the sweep's output

    @property
    def store(self) -> str:
        return f"sqlite:///{self.work / 'mlflow.db'}"

    def base(self) -> list[str]:
        simulated = (
            [f"monitor.fake_gpu_watts={self.shape.fake_gpu_watts}"] if self.shape.fake_gpu_watts else []
        )
        return [
            "model.weights=random",
            "dataset=synthetic_text",
            f"hardware.device={self.shape.device}",
            *self.shape.overrides,
            *simulated,
        ]

    def counter_mj(self) -> Callable[[], float]:
        if self.shape.fake_gpu_watts is not None:
            return simulated_counter_mj(self.shape.fake_gpu_watts)
        return nvml_counter_mj(0)


def command(overrides: list[str]) -> str:
    return "python -m ecopipe " + " ".join(overrides)


def run_job(ctx: Context, *overrides: str) -> tuple[dict[str, float], dict[str, str], str, str]:
    """One job in this process: (metrics, tags, run id, the equivalent command line)."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from ecopipe.config import CONFIG_DIR, register_configs
    from ecopipe.job import run_job as run

    register_configs()
    args = [*ctx.base(), *overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={ctx.store}", *args])
    outcome = run(cfg)
    tags = MlflowClient(ctx.store).get_run(outcome.run_id).data.tags
    return outcome.metrics, tags, outcome.run_id, command(args)


def trial_history(ctx: Context, run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    return [
        m.value for m in sorted(MlflowClient(ctx.store).get_metric_history(run_id, key), key=lambda m: m.step)
    ]


def mean_power_w(read_mj: Callable[[], float], seconds: float) -> float:
    before, start = read_mj(), time.perf_counter()
    time.sleep(seconds)
    return (read_mj() - before) / 1000.0 / (time.perf_counter() - start)


# --- steps --------------------------------------------------------------------------------------------


def idle(ctx: Context) -> StepResult:
    """GPU power from its counter before and after this process opens a CUDA context (none open before)."""
    import torch

    read = ctx.counter_mj()
    result = StepResult()
    result.figures.append(Figure("idle power, no CUDA context", mean_power_w(read, ctx.shape.idle_s), "W"))
    if ctx.shape.device == "cuda":
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    result.figures.append(Figure("idle power, CUDA context open", mean_power_w(read, ctx.shape.idle_s), "W"))
    result.notes.append(
        f"counter-based means over {ctx.shape.idle_s:g} s each; the job's baseline is in `counter`"
    )
    return result


def _against_counter(ctx: Context, gpu_sensor: str) -> StepResult:
    """The job's per-trial GPU energy beside a separate process's counter read over the same edges."""
    trace_path = ctx.work / f"counter_trace_{gpu_sensor}.csv"
    recorder = [sys.executable, "-m", "bench.gpu.counter", "--out", str(trace_path), "--hz", "50"]
    if ctx.shape.fake_gpu_watts is not None:
        recorder += ["--fake-watts", str(ctx.shape.fake_gpu_watts)]
    process = subprocess.Popen(recorder, cwd=ROOT)
    try:
        while not trace_path.exists() or trace_path.read_text().count("\n") < 3:
            if process.poll() is not None:
                raise RuntimeError(f"the counter recorder exited with status {process.returncode}")
            time.sleep(0.05)
        metrics, tags, run_id, cmd = run_job(
            ctx,
            f"model={ctx.shape.big}",
            f"precision={ctx.shape.float_precision}",
            *ctx.shape.counter_overrides,
            f"monitor.gpu_sensor={gpu_sensor}",
        )
        time.sleep(0.1)  # the trace must extend past the last edge
    finally:
        process.terminate()
        process.wait(timeout=10)
    trace = pd.read_csv(trace_path)
    trials = compare(
        trace,
        trial_history(ctx, run_id, "trial_start_unix_s"),
        trial_history(ctx, run_id, "trial_end_unix_s"),
        trial_history(ctx, run_id, "trial_energy_j.gpu"),
    )
    result = StepResult(notes=[f"job GPU source: {tags.get('energy_source.gpu')}; run {run_id}"])
    for t in trials:
        result.figures += [
            Figure(f"trial {t.trial + 1}: job GPU energy ({gpu_sensor})", t.job_j, "J", cmd),
            Figure(f"trial {t.trial + 1}: independent counter, same edges", t.independent_j, "J"),
            Figure(f"trial {t.trial + 1}: job / independent", t.ratio, ""),
        ]
        if abs(t.ratio - 1) > 0.01:
            result.notes.append(
                f"trial {t.trial + 1}: {100 * (t.ratio - 1):+.2f}% from the counter (target 1%)"
            )
    result.figures.append(
        Figure("job idle baseline (gpu)", metrics.get("idle_power_w.gpu", float("nan")), "W")
    )
    return result


def counter(ctx: Context) -> StepResult:
    return _against_counter(ctx, "counter")


def polling(ctx: Context) -> StepResult:
    return _against_counter(ctx, "polling")


def precisions(ctx: Context) -> StepResult:
    result = StepResult()
    for precision in ("fp32", "fp16", "bf16", "int8", "int4"):
        try:
            metrics, tags, _, cmd = run_job(ctx, f"model={ctx.shape.small}", f"precision={precision}")
        except Exception as error:  # one line each: the next precision still runs
            reason = " ".join(str(error).split())
            result.notes.append(f"{precision}: cannot run: {type(error).__name__}: {reason}")
            if not _is_refusal(error):
                result.failures.append(precision)
            continue
        result.figures += [
            Figure(f"{precision}: weights hold", tags["ecopipe.dtype"], "", cmd),
            Figure(f"{precision}: energy per 1,000 tokens", metrics["energy_per_1k_tokens_gross_j"], "J"),
        ]
    return result


def _is_refusal(error: Exception) -> bool:
    from ecopipe.config import ConfigError

    return isinstance(error, ConfigError)


def copy_bandwidth(device: str, megabytes: int = 1024, repeats: int = 10) -> float:
    """Bytes/s a device-to-device copy moves, counting bytes read and written (as the H200's 4.3 TB/s)."""
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


def engines(ctx: Context) -> StepResult:
    from bench.gpu_efficiency import BANDWIDTH

    result = StepResult()
    measured = copy_bandwidth(ctx.shape.device)
    rated = next((v for k, v in BANDWIDTH.items() if k in _device_name(ctx)), None)
    result.figures.append(Figure("copy bandwidth, measured", measured / 1e12, "TB/s"))
    if rated:
        result.figures.append(Figure("HBM bandwidth, rated", rated / 1e12, "TB/s"))
    bytes_per_weight = {"fp32": 4, "fp16": 2, "bf16": 2}[ctx.shape.float_precision]
    for engine in ("eager", "compiled"):
        for batch in ctx.shape.batches:
            label = f"{engine}, batch {batch}"
            try:
                metrics, _, _, cmd = run_job(
                    ctx,
                    f"model={ctx.shape.big}",
                    f"precision={ctx.shape.float_precision}",
                    f"engine={engine}",
                    f"batch_size={batch}",
                    f"dataset.limit={max(batch, 2)}",
                )
            except Exception as error:
                result.failures.append(label)
                result.notes.append(f"{label}: {type(error).__name__}: {' '.join(str(error).split())}")
                continue
            tokens_per_s = metrics["tokens"] / metrics["window_s"]
            result.figures += [
                Figure(f"{label}: tokens/s", tokens_per_s, "tokens/s", cmd),
                Figure(f"{label}: energy per token", metrics["energy_per_1k_tokens_gross_j"] / 1000, "J"),
            ]
            if batch == 1:  # each new token reads every weight once: tokens/s <= bandwidth / weight bytes
                weight_bytes = metrics["parameters"] * bytes_per_weight
                result.figures.append(
                    Figure(
                        f"{label}: fraction of the measured-bandwidth bound",
                        tokens_per_s * weight_bytes / measured,
                    )
                )
                if rated:
                    result.figures.append(
                        Figure(
                            f"{label}: fraction of the rated-bandwidth bound",
                            tokens_per_s * weight_bytes / rated,
                        )
                    )
    return result


def _device_name(ctx: Context) -> str:
    import torch

    return torch.cuda.get_device_name(0) if ctx.shape.device == "cuda" else "cpu"


def headline(ctx: Context) -> StepResult:
    metrics, tags, _, cmd = run_job(ctx, f"model={ctx.shape.headline}", "precision=int8")
    return StepResult(
        figures=[
            Figure("weights hold", tags["ecopipe.dtype"], "", cmd),
            Figure("energy per 1,000 tokens", metrics["energy_per_1k_tokens_gross_j"], "J"),
            Figure("tokens/s", metrics["tokens"] / metrics["window_s"], "tokens/s"),
        ],
        notes=[f"energy sources: gpu {tags.get('energy_source.gpu')}, cpu {tags.get('energy_source.cpu')}"],
    )


def sweep(ctx: Context) -> StepResult:
    """A 4-job multirun (2 models x 2 precisions) and its aggregation, in a process of its own."""
    from mlflow.tracking import MlflowClient

    folder = ctx.work / "sweep"
    args = [
        "-m",
        f"model={ctx.shape.sweep_models}",
        f"precision={ctx.shape.sweep_precisions}",
        *ctx.base(),
        f"tracking.uri={ctx.store}",
        "tracking.experiment=gpu-check-sweep",
        f"hydra.sweep.dir={folder}",
    ]
    done = subprocess.run([sys.executable, "-m", "ecopipe", *args], cwd=ROOT, capture_output=True, text=True)
    client = MlflowClient(ctx.store)
    experiment = client.get_experiment_by_name("gpu-check-sweep")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    finished = sum(r.info.status == "FINISHED" for r in children)
    tables = sorted(p.name for p in (folder / "aggregate").rglob("*.csv"))  # tables/, data/...
    result = StepResult(
        figures=[
            Figure("jobs FINISHED", f"{finished} of {len(children)}", "", command(args)),
            Figure("aggregate tables", len(tables), "CSV files"),
            Figure("sweep exit status", done.returncode),
        ]
    )
    if done.returncode != 0 or finished != 4 or not tables:
        result.failures.append("sweep")
        result.notes.append("sweep output, last lines: " + " | ".join(done.stderr.strip().splitlines()[-5:]))
    return result


def cuda_tests(ctx: Context) -> StepResult:
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
    result = StepResult(
        figures=[
            Figure(k, counts.get(k, 0), "tests", "python -m pytest -m cuda tests")
            for k in ("passed", "failed", "skipped", "error")
        ]
    )
    if done.returncode != 0:
        result.failures.append("pytest")
        result.notes.append("pytest, last lines: " + " | ".join(done.stdout.strip().splitlines()[-8:]))
    return result


# In the order they run: the idle step first, while no process holds a CUDA context; the longest last.
STEPS: dict[str, Callable[[Context], StepResult]] = {
    "idle": idle,
    "counter": counter,
    "polling": polling,
    "precisions": precisions,
    "headline": headline,
    "sweep": sweep,
    "pytest": cuda_tests,
    "engines": engines,  # compiling two shapes of a 1.3B model can take minutes: last, with what time is left
}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one step of the GPU check; write its result as JSON.")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--shape", choices=SHAPES, default="gpu")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    result = STEPS[args.step](Context(SHAPES[args.shape], args.work))
    args.result.write_text(json.dumps(asdict(result), default=str))


if __name__ == "__main__":
    main()
