"""Estimates for machines without RAPL: CPU from TDP and process CPU time, RAM from installed size.

These are models, not measurements (Source.is_measurement is False): every figure from them carries
the source `estimated_tdp` / `estimated_per_gb` into MLflow and the tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

from ecopipe.sensors.base import Component, EnergySensor, Source

# Per-logical-CPU TDP for a CPU model of unknown TDP: CodeCarbon's DEFAULT_POWER_PER_CORE = 4 W
# (codecarbon/core/cpu.py, "default W value per core for a CPU if no model is found in the ref csv";
# CodeCarbon multiplies it by the thread count).
DEFAULT_TDP_PER_CORE_W = 4.0
# Whole-CPU TDP when not even the core count is known: CodeCarbon's POWER_CONSTANT = 85 W
# (codecarbon/external/hardware.py, "default W value for a CPU if no model is found in the ref csv").
FALLBACK_TDP_W = 85.0
# Idle power as a fraction of TDP: the 10% floor of CodeCarbon's machine-mode CPU load model,
# power = TDP * (0.1 + 0.9 * load**3) (codecarbon/external/hardware.py, _get_power_from_cpu_load).
# CodeCarbon's own methodology page says that floor is unsourced: treat it as an assumption.
CPU_IDLE_FRACTION = 0.10
# DRAM power per GiB installed: 3 W per 8 GB of DDR3/DDR4 (Crucial's "How much power does memory
# use?" FAQ), CodeCarbon v2's RAM.power_per_GB = 3 / 8 (codecarbon/external/hardware.py). CodeCarbon
# v3 replaced it with 5 W per DIMM (RAM_SLOT_POWER_X86, external/ram.py), which needs a DIMM count
# that is unreadable without root; we keep the per-GB rule.
RAM_W_PER_GB = 3 / 8

BYTES_PER_GB = 1024**3  # GiB, as CodeCarbon's ram_total_size


def cpu_estimate_defaults(n_cores: int, tdp_w: float | None) -> tuple[float, float, str]:
    """(tdp_w, idle_w, note): the TDP to use, its idle share, and which default applied."""
    idle_note = f"idle = {CPU_IDLE_FRACTION:.0%} of TDP (CodeCarbon's load-model floor, an assumption)"
    if tdp_w is not None:
        if tdp_w <= 0:
            raise ValueError(f"tdp_w must be > 0, got {tdp_w}")
        return tdp_w, CPU_IDLE_FRACTION * tdp_w, f"TDP {tdp_w:g} W as given; {idle_note}"
    if n_cores >= 1:
        tdp = DEFAULT_TDP_PER_CORE_W * n_cores
        note = (
            f"CPU TDP unknown: {DEFAULT_TDP_PER_CORE_W:g} W x {n_cores} logical CPUs = {tdp:g} W "
            f"(CodeCarbon DEFAULT_POWER_PER_CORE); {idle_note}"
        )
        return tdp, CPU_IDLE_FRACTION * tdp, note
    note = f"CPU TDP and core count unknown: {FALLBACK_TDP_W:g} W (CodeCarbon POWER_CONSTANT); {idle_note}"
    return FALLBACK_TDP_W, CPU_IDLE_FRACTION * FALLBACK_TDP_W, note


def process_cpu_seconds(proc: psutil.Process | None = None) -> float:
    """User + system CPU seconds of this process and its children, live and exited.

    cpu_times().children_* only covers children already reaped, so live descendants (DataLoader
    workers...) are added one by one; a child vanishing between the two reads is skipped.
    """
    proc = proc or psutil.Process()

    def total(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    seconds = total(proc)
    for child in proc.children(recursive=True):
        try:
            seconds += total(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return seconds


class EstimatedCpuSensor(EnergySensor):
    """CPU energy = idle_w x elapsed + (tdp_w - idle_w) x (process CPU seconds since open) / n_cores.

    The second term is the dynamic power share of this process's utilisation of the whole CPU (the
    TDP covers all `n_cores` logical CPUs). Reads never sleep nor call psutil with interval=.
    """

    component = Component.CPU
    source = Source.ESTIMATED_TDP
    device = "cpu"
    resolution_s = 0.01  # CPU times tick at USER_HZ (100 Hz on Linux)

    def __init__(
        self,
        tdp_w: float,
        idle_w: float,
        n_cores: int,
        clock: Callable[[], float] = time.perf_counter,
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
    ) -> None:
        if not 0 <= idle_w <= tdp_w or n_cores < 1:
            raise ValueError(f"need 0 <= idle_w <= tdp_w and n_cores >= 1: {idle_w=}, {tdp_w=}, {n_cores=}")
        self.tdp_w, self.idle_w, self.n_cores = tdp_w, idle_w, n_cores
        self._clock, self._cpu_seconds = clock, cpu_seconds
        self._lock = threading.Lock()
        self._origin: tuple[float, float] | None = None  # (t, cpu s) at open
        self._max_cpu = 0.0  # CPU seconds seen so far: keeps the figure monotonic
        self._last_power: tuple[float, float] | None = None

    def _energy(self) -> tuple[float, float]:
        if self._origin is None:
            raise RuntimeError(f"{self!r} read before open()")
        with self._lock:
            now, cpu = self._clock(), self._cpu_seconds()
            self._max_cpu = max(self._max_cpu, cpu)  # a child exiting unreaped can dip the sum
            t0, cpu0 = self._origin
            busy = max(0.0, self._max_cpu - cpu0)
            return now, self.idle_w * (now - t0) + (self.tdp_w - self.idle_w) * busy / self.n_cores

    def open(self) -> None:
        cpu = self._cpu_seconds()
        self._origin, self._max_cpu, self._last_power = (self._clock(), cpu), cpu, None

    def read_joules(self) -> float:
        return self._energy()[1]

    def power_watts(self) -> float | None:
        """Mean estimated power since the previous call (None on the first call)."""
        if self._origin is None:
            return None
        now, joules = self._energy()
        last, self._last_power = self._last_power, (now, joules)
        if last is None or now <= last[0]:
            return None
        return (joules - last[1]) / (now - last[0])


class EstimatedRamSensor(EnergySensor):
    """RAM energy = watts_per_gb x gigabytes (GiB installed) x elapsed: a constant-power model."""

    component = Component.RAM
    source = Source.ESTIMATED_PER_GB
    device = "ram"
    resolution_s = 0.0  # a model: exact at any instant

    def __init__(
        self, watts_per_gb: float, gigabytes: float, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if watts_per_gb < 0 or gigabytes < 0:
            raise ValueError(f"need non-negative watts_per_gb and gigabytes: {watts_per_gb=}, {gigabytes=}")
        self.watts = watts_per_gb * gigabytes
        self._clock = clock
        self._t0: float | None = None

    def open(self) -> None:
        self._t0 = self._clock()

    def read_joules(self) -> float:
        if self._t0 is None:
            raise RuntimeError(f"{self!r} read before open()")
        return self.watts * (self._clock() - self._t0)

    def power_watts(self) -> float | None:
        return self.watts
