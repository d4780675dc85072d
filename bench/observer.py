"""Observer effect: throughput of one workload with the monitor on and off, and the sampler's CPU share.

"On" is what a job runs during its measured window: sensors open, the adaptive sampler thread
polling them, edge reads. "Off" is the bare loop. Trials alternate on/off so drift hits both.
"""

from __future__ import annotations

import time

import pandas as pd

from bench.common import job_config, median
from ecopipe.hardware import cuda_available, gpu_index
from ecopipe.monitor.energy import machine_meter
from ecopipe.monitor.sampler import PowerSampler
from ecopipe.workloads.base import Workload
from ecopipe.workloads.factory import build_workload

TRIALS = 5
WINDOW_S = 2.0

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


def _throughput(workload: Workload, seconds: float) -> float:
    samples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        stats, _ = workload.run_pass()
        samples += stats.samples
    workload.synchronize()
    return samples / (time.perf_counter() - started)


def measure(overrides: list[str]) -> dict[str, float]:
    cfg = job_config(*overrides)
    workload = build_workload(cfg)
    workload.load()
    workload.fit()
    index = gpu_index(workload.device)
    indices = [] if index is None else [index]
    meter = machine_meter(indices, synchronize=workload.synchronize)
    meter.open()
    _throughput(workload, 0.5)  # warm-up
    off, on, overhead = [], [], []
    for _ in range(TRIALS):
        off.append(_throughput(workload, WINDOW_S))
        sampler = PowerSampler(meter.sensors, indices)
        start = meter.snapshot()
        sampler.start()
        on.append(_throughput(workload, WINDOW_S))
        trace = sampler.stop()
        meter.since(start)
        overhead.append(trace.overhead_frac)
    meter.close()
    return {
        "unmonitored / s": median(off),
        "monitored / s": median(on),
        "monitored / unmonitored": median([a / b for a, b in zip(on, off, strict=True)]),
        "sampler CPU share of one core": median(overhead),
    }


def run() -> pd.DataFrame:
    rows = []
    for name, overrides in CASES.items():
        if "hardware.device=cuda" in overrides and not cuda_available():
            continue
        rows.append({"workload": name, **measure(overrides)})
    return pd.DataFrame(rows)
