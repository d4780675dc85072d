"""How busy the rest of the machine was: other processes' CPU time while the job's windows ran.

An estimate charges the job's own CPU time, and the trials' CI sees only the noise between trials. On a
shared machine, other processes slow the job and make its runs differ by more than that CI: a busy
machine is worth a warning beside the figures.
"""

from __future__ import annotations

import math
import time

import psutil

from ecopipe.sensors.estimated import process_cpu_seconds

# Above this share of the machine's CPUs used by others, the summary warns (a quiet VM shows 1-3%).
BUSY_WARNING = 0.10


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (/proc/stat): all but idle and iowait, steal included
    (on a VM, the hypervisor giving this VM's CPUs to others)."""
    t = psutil.cpu_times()
    return sum(getattr(t, f) for f in ("user", "nice", "system", "irq", "softirq", "steal") if hasattr(t, f))


class MachineLoad:
    """Other processes' share of the machine's CPUs between start() and stop(): (machine busy time -
    this process tree's CPU time) / (wall time x CPUs)."""

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _read() -> tuple[float, float, float]:
        return time.monotonic(), _machine_busy_s(), process_cpu_seconds()

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        """The share in [0, 1]; nan when not started or too short to tell."""
        if self._start is None:
            return math.nan
        (t0, busy0, own0), (t1, busy1, own1) = self._start, self._read()
        capacity = (t1 - t0) * (psutil.cpu_count() or 1)
        if capacity <= 0:
            return math.nan
        return min(1.0, max(0.0, ((busy1 - busy0) - (own1 - own0)) / capacity))
