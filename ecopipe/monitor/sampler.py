"""Background power/utilisation trace at an adaptive rate, and the sampler's own cost.

Frequency-aware: the period starts at 1/max_hz, so a one-second window still gets dozens of samples,
and grows with the elapsed time (elapsed / SAMPLES_PER_E_FOLD) down to min_hz, so a long job's trace
stays small; `frequency_hz` pins the rate. The sampling runs in a separate process (ecopipe.monitor.
probe), so it never takes the workload's GIL; nothing on the workload's side sleeps or blocks. Energy
figures never come from this trace (they come from the sensors' window edges); it documents what
happened inside the window: observed power, process CPU and memory, GPU utilisation, memory,
temperature, SM clock and P-state. Where a component has no counter, its estimate's power at each
sample is added after the run (`estimated_power_w.<component>`, named so), computed from the process
readings of the same trace, so that a machine without counters still shows a power trace.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ecopipe.monitor.probe import SAMPLES_PER_E_FOLD, sampling_period
from ecopipe.names import Metric
from ecopipe.sensors.base import EnergySensor
from ecopipe.sensors.discovery import telemetry_specs

__all__ = ["SAMPLES_PER_E_FOLD", "PowerSampler", "Trace", "sampling_period"]

_READY_TIMEOUT_S = 60.0


def trace_folder_prefix(pid: int) -> str:
    """A trace folder's name starts with its job's pid, so that whoever outlives a killed job (its
    sweep's launcher) can remove what the job could not."""
    return f"ecopipe-trace-{pid}-"


def remove_traces_of(pid: int) -> None:
    for folder in Path(tempfile.gettempdir()).glob(trace_folder_prefix(pid) + "*"):
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Trace:
    samples: pd.DataFrame  # one row per sample: t_s, power_w.<sensor>, process and GPU telemetry
    wall_s: float
    sampler_cpu_s: float  # CPU time the sampler process itself used
    started_at: float = math.nan  # Unix time of the window's start (t_s = 0), to place samples in time

    def peak_memory_mb(self) -> dict[str, float]:
        """The most memory the trace saw: the job's main process resident (`peak_rss_mb`) and its
        GPUs' memory in use, every process's (`peak_gpu_memory_mb`, NVML), in MiB."""
        peaks: dict[str, float] = {}
        if "process.rss_mb" in self.samples and self.samples["process.rss_mb"].notna().any():
            peaks[Metric.PEAK_RSS] = float(self.samples["process.rss_mb"].max())
        gpu = [c for c in self.samples if c.endswith(".memory_used_mb")]
        if gpu and self.samples[gpu].notna().any().any():
            peaks[Metric.PEAK_GPU_MEMORY] = float(self.samples[gpu].sum(axis=1, min_count=1).max())
        return peaks

    @property
    def overhead_frac(self) -> float:
        """Sampler CPU seconds per second of window: its share of one core."""
        return self.sampler_cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


ESTIMATED_POWER = "estimated_power_w."  # a trace column of a model's power, never a measurement


def with_estimated_power(trace: Trace, sensors: Sequence[EnergySensor]) -> Trace:
    """The trace with a column of each model sensor's power (EnergySensor.trace_watts) at its samples."""
    if trace.samples.empty:
        return trace
    estimates = {
        f"{ESTIMATED_POWER}{sensor.component.value}": watts
        for sensor in sensors
        if (watts := sensor.trace_watts(trace.samples)) is not None
    }
    return replace(trace, samples=trace.samples.assign(**estimates))


class PowerSampler:
    def __init__(
        self,
        sensors: Sequence[EnergySensor],
        gpu_indices: Sequence[int] = (),
        min_hz: float = 1.0,
        max_hz: float = 50.0,
        frequency_hz: float | None = None,
    ) -> None:
        self._sensors = list(sensors)
        self._specs = [spec for s in sensors if (spec := s.probe_spec()) is not None]
        self._gpus = list(gpu_indices)
        self.min_hz, self.max_hz, self.frequency_hz = min_hz, max_hz, frequency_hz
        self._process: subprocess.Popen[str] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._started, self._started_at = 0.0, math.nan

    def start(self) -> None:
        """Start the sampling process and wait until it has taken its first sample."""
        self._folder = tempfile.TemporaryDirectory(prefix=trace_folder_prefix(os.getpid()))
        spec = {
            "pid": os.getpid(),
            "output": str(Path(self._folder.name) / "trace.jsonl"),
            "sensors": self._specs,
            "telemetry": telemetry_specs(self._gpus),
            "min_hz": self.min_hz,
            "max_hz": self.max_hz,
            "frequency_hz": self.frequency_hz,
        }
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ecopipe.monitor.probe", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            # Before any read can see it: the sampler is the observer, not the workload. An estimate
            # built on the job's CPU time or memory leaves it out (a counter cannot, so the sampler runs
            # through the idle baseline too and both sides of net carry it).
            for sensor in self._sensors:
                sensor.exclude_process(self._process.pid)
            assert self._process.stdout is not None
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while self._process.stdout.readline().strip() != "ready":
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the power sampler process did not start (exit {self._process.poll()})"
                    )
        except BaseException:  # a failed start or a stop signal: leave no process and no folder behind
            if self._process is not None:
                self._process.kill()
                self._process.wait()
            self._folder.cleanup()
            raise
        self._started, self._started_at = time.perf_counter(), time.time()

    def stop(self) -> Trace:
        assert self._process is not None and self._folder is not None, "stop() before start()"
        wall = time.perf_counter() - self._started
        try:
            self._process.communicate("stop\n", timeout=60)  # ends it after one last sample
            lines = (Path(self._folder.name) / "trace.jsonl").read_text().splitlines()
        finally:
            self._folder.cleanup()
        rows = [json.loads(line) for line in lines]
        cpu = rows.pop()["sampler_cpu_s"] if rows and "sampler_cpu_s" in rows[-1] else float("nan")
        return Trace(pd.DataFrame(rows), wall, cpu, self._started_at)
