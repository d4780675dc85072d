"""How busy the machine was, from /proc/stat, beside the job's own CPU time.

Two uses. A counter that sees the whole machine (a RAPL package or dram zone) charges the job only its
share: its CPU time over the machine's busy CPU time in the window (`CpuTimes`, `job_share`). And an
estimate charges the job's own CPU time while the trials' CI sees only the noise between trials: on a
shared machine other processes make runs differ by more than that CI, worth a warning (`MachineLoad`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from ecopipe.sensors.estimated import process_cpu_seconds

PROC_STAT = Path("/proc/stat")
# Above this share of the machine's CPUs used by others, the summary warns (a quiet VM shows 1-3%).
BUSY_WARNING = 0.10
# /proc/stat's aggregate `cpu` line, in USER_HZ ticks (proc(5)): user nice system idle iowait irq
# softirq steal guest guest_nice. Busy = all but idle and iowait; guest time is already inside user.
# Steal counts as busy: on a VM it is the host giving this VM's CPUs to others.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def machine_busy_s(stat_text: str, ticks_per_s: float | None = None) -> float:
    """CPU seconds the whole machine has spent busy since boot, from the text of /proc/stat."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:]]
            hz = ticks_per_s or os.sysconf("SC_CLK_TCK")
            return sum(ticks[i] for i in _BUSY_FIELDS if i < len(ticks)) / hz
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


@dataclass(frozen=True)
class CpuReading:
    job_s: float  # CPU seconds of the job's process tree
    machine_busy_s: float  # CPU seconds the whole machine spent busy (the job's included)


class CpuTimes:
    """Reads the job's and the machine's CPU time together. Both sources are injectable: tests feed a
    recorded /proc/stat and a job clock."""

    def __init__(
        self, stat_path: Path = PROC_STAT, job_seconds: Callable[[], float] = process_cpu_seconds
    ) -> None:
        self.stat_path = Path(stat_path)
        self._job_seconds = job_seconds

    def read(self) -> CpuReading:
        return CpuReading(self._job_seconds(), machine_busy_s(self.stat_path.read_text()))


def job_share(start: CpuReading, end: CpuReading) -> float:
    """The job's CPU time over the machine's busy CPU time between two readings, in [0, 1].

    Both counters tick at 1/USER_HZ, so the job's time can run a tick ahead of the machine's: the
    denominator is at least the job's. A window in which no CPU was busy at all is charged whole
    (1.0): nobody else used the machine either.
    """
    job = max(0.0, end.job_s - start.job_s)
    busy = max(end.machine_busy_s - start.machine_busy_s, job)
    return job / busy if busy > 0 else 1.0


class MachineLoad:
    """Other processes' share of the machine's CPUs between start() and stop(): (machine busy time -
    this process tree's CPU time) / (wall time x CPUs)."""

    def __init__(self, cpu_times: CpuTimes | None = None) -> None:
        self._cpu_times = cpu_times or CpuTimes()
        self._start: tuple[float, CpuReading] | None = None

    def _read(self) -> tuple[float, CpuReading]:
        return time.monotonic(), self._cpu_times.read()

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        """The share in [0, 1]; nan when not started or too short to tell."""
        if self._start is None:
            return math.nan
        (t0, first), (t1, last) = self._start, self._read()
        capacity = (t1 - t0) * (psutil.cpu_count() or 1)
        if capacity <= 0:
            return math.nan
        others = (last.machine_busy_s - first.machine_busy_s) - (last.job_s - first.job_s)
        return min(1.0, max(0.0, others / capacity))
