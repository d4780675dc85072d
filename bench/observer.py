"""Observer effect: throughput of one workload with the monitor on and off, and the sampler's CPU share.

"On" is what a job runs during its measured window: sensors open, the sampler process polling them at
the default rate (conf/monitor/default.yaml), edge reads. "Off" is the bare loop. Trials alternate
on/off so drift hits both.

The sampler's cost is measured twice, from outside and from inside: the scheduler's own count of the
nanoseconds its threads ran (/proc/<pid>/task/*/schedstat, read by this process right after the sampler
is ready and right before it is stopped), and its own user + system CPU seconds (psutil, 10-ms ticks:
in a 2-s window one tick is 0.5% of a core), which a job logs as monitor_overhead_frac. Both are over
the window's wall time: a share of one core. It is measured in 2-s windows (the rate's fast start, the
most it costs) and over a default job's sampled span (idle baseline + trials x min window).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import psutil

from bench.common import job_config, median
from ecopipe.hardware import cuda_available, gpu_index
from ecopipe.monitor.energy import machine_meter
from ecopipe.monitor.sampler import PowerSampler
from ecopipe.workloads.base import Workload
from ecopipe.workloads.factory import build_workload

TRIALS = 5
WINDOW_S = 2.0
TARGET = 0.01  # of one core
PROBE_MODULE = "ecopipe.monitor.probe"

CASES = {
    "scikit-learn logistic regression (µs per sample), CPU": [
        "model=logistic_regression",
        "dataset=digits",
        "hardware.device=cpu",
    ],
    "all-MiniLM-L6-v2 (22 M, real weights), CPU": [
        "model=all-MiniLM-L6-v2",
        "dataset=synthetic_text",
        "hardware.device=cpu",
        "batch_size=16",
        "dataset.limit=64",
    ],
    "opt-125m (random weights) generation, CUDA": [
        "model=opt-125m",
        "model.weights=random",
        "dataset=synthetic_text",
        "hardware.device=cuda",
        "batch_size=8",
        "dataset.limit=32",
        "precision=fp16",
    ],
}


def default_rate() -> tuple[float, float, float | None, float]:
    """The default monitor's min_hz, max_hz, frequency_hz, and a default job's sampled span (s)."""
    monitor = job_config().monitor
    span = monitor.idle_s + monitor.trials * monitor.min_window_s
    return monitor.min_hz, monitor.max_hz, monitor.frequency_hz, span


def schedstat_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """CPU time (s) the scheduler counted for every live thread of `pid` (first field, ns)."""
    total = 0
    for stat in (proc / str(pid) / "task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread ended between the listing and the read
            continue
    return total / 1e9


def sampler_pid() -> int | None:
    """This process's sampler child (the probe module's process)."""
    for child in psutil.Process().children():
        try:
            if PROBE_MODULE in child.cmdline():
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def spread_pct(fractions: Sequence[float]) -> str:
    """Shares of a core as `median% (min–max%)`."""
    return (
        f"{100 * statistics.median(fractions):.2f}% ({100 * min(fractions):.2f}–{100 * max(fractions):.2f}%)"
    )


def verdict(share: float, target: float = TARGET) -> str:
    return "pass" if share <= target else "FAIL"


def _throughput(workload: Workload, seconds: float) -> float:
    samples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        stats, _ = workload.run_pass()
        samples += stats.samples
    workload.synchronize()
    return samples / (time.perf_counter() - started)


def _monitored(
    workload: Workload,
    meter: object,
    indices: list[int],
    seconds: float,
    rate: tuple[float, float, float | None],
) -> dict[str, float]:
    """One window with the sampler on: throughput, and the sampler's CPU share read from outside
    (schedstat) and from inside (its own cpu_times), and its sampling rate."""
    sampler = PowerSampler(meter.sensors, indices, *rate)  # type: ignore[attr-defined]
    start = meter.snapshot()  # type: ignore[attr-defined]
    sampler.start()
    pid = sampler_pid()
    cpu_before, wall_before = (schedstat_seconds(pid) if pid else float("nan")), time.perf_counter()
    throughput = _throughput(workload, seconds)
    cpu_after, wall_after = (schedstat_seconds(pid) if pid else float("nan")), time.perf_counter()
    trace = sampler.stop()
    meter.since(start)  # type: ignore[attr-defined]
    return {
        "throughput": throughput,
        "outside": (cpu_after - cpu_before) / (wall_after - wall_before),
        "inside": trace.overhead_frac,
        "rate_hz": len(trace.samples) / trace.wall_s,
    }


def measure(overrides: list[str]) -> dict[str, object]:
    cfg = job_config(*overrides)
    min_hz, max_hz, frequency_hz, span = default_rate()
    rate = (min_hz, max_hz, frequency_hz)
    workload = build_workload(cfg)
    workload.load()
    workload.fit()
    index = gpu_index(workload.device)
    indices = [] if index is None else [index]
    meter = machine_meter(indices, synchronize=workload.synchronize)
    meter.open()
    _throughput(workload, 0.5)  # warm-up
    off, short, long = [], [], []
    for _ in range(TRIALS):
        off.append(_throughput(workload, WINDOW_S))
        short.append(_monitored(workload, meter, indices, WINDOW_S, rate))
    for _ in range(TRIALS):
        long.append(_monitored(workload, meter, indices, span, rate))
    meter.close()
    on = [w["throughput"] for w in short]
    short_share = median([w["outside"] for w in short])
    long_share = median([w["outside"] for w in long])
    return {
        "unmonitored / s": median(off),
        "monitored / s": median(on),
        "monitored / unmonitored": median([a / b for a, b in zip(on, off, strict=True)]),
        "sampler samples / s, 2-s windows": median([w["rate_hz"] for w in short]),
        "sampler share of one core, 2-s windows": spread_pct([w["outside"] for w in short]),
        f"sampler share of one core, {span:g}-s job span": spread_pct([w["outside"] for w in long]),
        "<= 1% of a core": f"2 s: {verdict(short_share)}; {span:g} s: {verdict(long_share)}",
        # Kept for the notes: the sampler's own count, and the medians the verdicts came from.
        "_inside": (median([w["inside"] for w in short]), median([w["inside"] for w in long])),
        "_share": (short_share, long_share),
        "_rate": f"min_hz={min_hz:g}, max_hz={max_hz:g}, frequency_hz={frequency_hz}",
        "_span": span,
    }


def run() -> pd.DataFrame:
    rows = []
    for name, overrides in CASES.items():
        if "hardware.device=cuda" in overrides and not cuda_available():
            continue
        rows.append({"workload": name, **measure(overrides)})
    frame = pd.DataFrame(rows)
    hidden = [c for c in frame.columns if c.startswith("_")]
    span = frame["_span"].iloc[0]
    worst = {WINDOW_S: max(a for a, _ in frame["_share"]), span: max(b for _, b in frame["_share"])}
    inside = "; ".join(
        f"{w}: {100 * a:.2f}% (2 s), {100 * b:.2f}% ({span:g} s)"
        for w, (a, b) in zip(frame["workload"], frame["_inside"], strict=True)
    )
    table = frame.drop(columns=hidden)
    table.attrs["notes"] = [
        f"Sampler rate: the default, {frame['_rate'].iloc[0]}. Its share of one core above is the "
        "scheduler's count (schedstat, ns) read from outside; its own psutil count (10-ms ticks), "
        f"medians: {inside}.",
        "Target sampler <= 1% of one core (largest median over the workloads): "
        + "; ".join(
            f"{seconds:g}-s windows {100 * share:.2f}%: {verdict(share).upper()}"
            for seconds, share in worst.items()
        )
        + ".",
    ]
    print(table.attrs["notes"][-1], flush=True)
    return table
