"""Estimates for machines without RAPL: the job's share of the CPU packages, and the memory it holds.

These are models, not measurements (Source.is_measurement is False): every figure from them carries
the source `estimated_tdp` / `estimated_rss` / `estimated_per_gb` into MLflow and the tables, and
`method` says how it was made. Both follow wall time: idle power x elapsed is most of a small job's
estimate, so a slower run of the same work is charged more whatever it really drew.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import psutil

from ecopipe.sensors.base import Component, EnergySensor, Source

# Per-thread TDP for a CPU model of unknown TDP: CodeCarbon's DEFAULT_POWER_PER_CORE = 4 W
# (codecarbon/core/cpu.py, "default W value per core for a CPU if no model is found in the ref csv";
# CodeCarbon multiplies it by the thread count, so it is a per-thread figure). An assumption.
DEFAULT_TDP_PER_THREAD_W = 4.0

# Server CPU load curve: package power as a fraction of TDP at 0, 10, 50 and 100% utilisation, from
# Teads (B. Davy, "Building an AWS EC2 Carbon Emissions Dataset", Teads Engineering, 2021), fitted on
# SPECpower_ssj2008 results and RAPL measurements of bare-metal EC2 hosts; interpolated linearly, as
# the Green Software Foundation's Impact Framework and Cloud Carbon Footprint use it. It is an average
# over servers: the GSF notes that it "does not generalize well" to any one machine.
LOAD_CURVE = "Teads (SPECpower) load curve"
LOAD_POINTS = (0.0, 0.10, 0.50, 1.00)
TDP_FRACTIONS = (0.12, 0.32, 0.75, 1.02)

# DRAM power per GiB: 3 W per 8 GB of DDR3/DDR4 (Crucial's "How much power does memory use?" FAQ,
# until 2024), CodeCarbon v2's RAM.power_per_GB = 3 / 8. Measurements put DRAM background power well
# below it (0.02-0.08 W/GB: Green Algorithms calculator issue #14 and pull request #38), so it is a
# high figure; kept because it is the one the other tools use, and the README gives the range.
RAM_W_PER_GB = 3 / 8

BYTES_PER_GB = 1024**3  # GiB, as CodeCarbon's ram_total_size


def load_fraction(utilisation: float) -> float:
    """Package power as a fraction of TDP at a utilisation in [0, 1] (clamped), on LOAD_CURVE."""
    return float(np.interp(min(max(utilisation, 0.0), 1.0), LOAD_POINTS, TDP_FRACTIONS))


@dataclass(frozen=True)
class CpuShare:
    """The part of the host's CPU packages a job may use: its visible threads' share of package TDP."""

    watts_per_thread: float  # package TDP / threads per package
    threads: float  # CPUs the job may use: affinity capped by the cgroup quota
    note: str  # where each figure came from

    @property
    def tdp_share_w(self) -> float:
        return self.watts_per_thread * self.threads


def cpu_share(
    threads: float, tdp_w: float | None, threads_per_package: int | None, model: str | None, note: str = ""
) -> CpuShare:
    """The job's share: package TDP / threads per package x the threads it may use.

    Without a TDP for the model, CodeCarbon's 4 W per thread stands in. A known TDP needs the model's
    threads per package (from the hardware table): dividing it over the logical CPUs the OS shows
    would charge a 2-vCPU VM on a 128-thread package for half the package.
    """
    if threads <= 0:
        raise ValueError(f"threads must be > 0, got {threads}")
    name = model or "unknown CPU"
    if tdp_w is not None and threads_per_package:
        per_thread = tdp_w / threads_per_package
        how = f"{name}: {tdp_w:g} W TDP / {threads_per_package} threads per package"
    else:
        per_thread = DEFAULT_TDP_PER_THREAD_W
        why = "TDP unknown" if tdp_w is None else "threads per package unknown"
        how = (
            f"{name}: {why}, {DEFAULT_TDP_PER_THREAD_W:g} W per thread (CodeCarbon's default, an assumption)"
        )
    return CpuShare(per_thread, threads, f"{how} x {threads:g} threads ({note or 'given'})")


def _tree(proc: psutil.Process, exclude: Collection[int]) -> list[psutil.Process]:
    return [proc, *(c for c in proc.children(recursive=True) if c.pid not in exclude)]


def process_cpu_seconds(proc: psutil.Process | None = None, exclude: Collection[int] = ()) -> float:
    """User + system CPU seconds of this process and its children, live and exited, but `exclude`.

    cpu_times().children_* only covers children already reaped, so live descendants (DataLoader
    workers...) are added one by one; a child vanishing between the two reads is skipped. An excluded
    child (the sampler) is counted again once reaped: stop it only after the last read of a window.
    """
    proc = proc or psutil.Process()
    seconds = 0.0
    for p in _tree(proc, exclude):
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        seconds += t.user + t.system + t.children_user + t.children_system
    return seconds


def process_memory_gb(proc: psutil.Process | None = None, exclude: Collection[int] = ()) -> float:
    """Resident memory (GiB) of this process and its live children, but `exclude`.

    RSS counts a page shared by two processes twice (forked workers): an upper bound on what they hold.
    """
    proc = proc or psutil.Process()
    rss = 0
    for p in _tree(proc, exclude):
        try:
            rss += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rss / BYTES_PER_GB


class _ModelSensor(EnergySensor):
    """A model integrated between reads, on the snapshot's timestamp (see read_joules_at)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None  # time of the previous read
        self._joules = 0.0
        self.excluded: set[int] = set()

    @abstractmethod
    def _start(self) -> None:
        """Take the model's origin state (CPU seconds, memory) at open."""

    @abstractmethod
    def _advance(self, dt: float) -> float:
        """Energy over the `dt` seconds since the previous read; updates the model's state."""

    def open(self) -> None:
        with self._lock:
            self._start()
            self._last, self._joules = self._clock(), 0.0

    def read_joules_at(self, now: float) -> float:
        with self._lock:
            if self._last is None:
                raise RuntimeError(f"{self!r} read before open()")
            dt = now - self._last
            if dt > 0:
                self._joules += self._advance(dt)
                self._last = now
            return self._joules

    def read_joules(self) -> float:
        return self.read_joules_at(self._clock())

    def exclude_process(self, pid: int) -> None:
        self.excluded.add(pid)


class EstimatedCpuSensor(_ModelSensor):
    """CPU energy = the job's TDP share x load curve (its mean utilisation between reads) x time.

    Utilisation = the job's CPU seconds / (elapsed x its visible threads). The meter reads at window
    edges, so each window is charged at its own mean utilisation: the idle baseline near the curve's
    12% floor, a busy window near 100%. Reads never sleep nor call psutil with interval=.
    """

    component = Component.CPU
    source = Source.ESTIMATED_TDP
    device = "cpu"
    resolution_s = 0.01  # CPU times tick at USER_HZ (100 Hz on Linux)

    def __init__(
        self,
        share: CpuShare,
        clock: Callable[[], float] = time.perf_counter,
        cpu_seconds: Callable[[Collection[int]], float] = lambda exclude: process_cpu_seconds(
            exclude=exclude
        ),
    ) -> None:
        super().__init__(clock)
        self.share = share
        self._cpu_seconds = cpu_seconds
        self._cpu = 0.0  # CPU seconds at the previous read (the most seen: monotonic)
        self.method = f"{share.note}, {share.tdp_share_w:.4g} W share on the {LOAD_CURVE}"

    def _start(self) -> None:
        self._cpu = self._cpu_seconds(self.excluded)

    def _advance(self, dt: float) -> float:
        cpu = max(self._cpu, self._cpu_seconds(self.excluded))  # a child exiting unreaped can dip the sum
        utilisation = (cpu - self._cpu) / (dt * self.share.threads)
        self._cpu = cpu
        return self.share.tdp_share_w * load_fraction(utilisation) * dt


class EstimatedRamSensor(_ModelSensor):
    """RAM energy = watts_per_gb x gigabytes x time, gigabytes read at each read (trapezoid between).

    `gigabytes` is the memory the job's processes hold (source estimated_rss) or the machine's
    installed memory (estimated_per_gb, constant).
    """

    component = Component.RAM
    device = "ram"
    resolution_s = 0.0  # a model: exact at any instant

    def __init__(
        self,
        watts_per_gb: float,
        gigabytes: Callable[[Collection[int]], float],
        source: Source,
        method: str,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if watts_per_gb < 0:
            raise ValueError(f"need non-negative watts_per_gb, got {watts_per_gb}")
        super().__init__(clock)
        self.watts_per_gb, self._gigabytes, self.source, self.method = watts_per_gb, gigabytes, source, method
        self._gb = 0.0

    @classmethod
    def installed(
        cls, gigabytes: float, clock: Callable[[], float] = time.perf_counter
    ) -> EstimatedRamSensor:
        """The whole machine's memory, charged to the job (constant power): the machine-wide view."""
        method = f"{gigabytes:.1f} GiB installed x {RAM_W_PER_GB:.3g} W/GB (CodeCarbon v2, Crucial)"
        return cls(RAM_W_PER_GB, lambda _exclude: gigabytes, Source.ESTIMATED_PER_GB, method, clock)

    @classmethod
    def held_by_job(
        cls,
        clock: Callable[[], float] = time.perf_counter,
        gigabytes: Callable[[Collection[int]], float] = lambda exclude: process_memory_gb(exclude=exclude),
    ) -> EstimatedRamSensor:
        """The memory the job's processes hold (resident set), the sampler left out."""
        method = f"resident memory of the job's processes x {RAM_W_PER_GB:.3g} W/GB (CodeCarbon v2, Crucial)"
        return cls(RAM_W_PER_GB, gigabytes, Source.ESTIMATED_RSS, method, clock)

    def _start(self) -> None:
        self._gb = self._gigabytes(self.excluded)

    def _advance(self, dt: float) -> float:
        gb = self._gigabytes(self.excluded)
        joules = self.watts_per_gb * (self._gb + gb) / 2 * dt
        self._gb = gb
        return joules
