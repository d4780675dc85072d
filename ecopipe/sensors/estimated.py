"""Estimates for machines without RAPL: the job's share of the server its CPUs sit in, and its memory.

These are models, not measurements (Source.is_measurement is False): every figure from them carries
the source `estimated_specpower` / `estimated_rss` / `estimated_per_gb` into MLflow and the tables,
`method` says how it was made, and each is computed at three bounds (low, point, high) of its
coefficients' sourced range, from the same CPU-time and memory readings.

The CPU model is Cloud Carbon Footprint's: watts per hardware thread = idle + utilisation x (full -
idle), with idle and full-load watts per thread from the SPECpower results of the CPU's
microarchitecture (ecopipe.cpu_identity). SPECpower measures a whole server at the wall (CPU,
memory, fans, power supply), so the `cpu` figure stands for the job's threads' share of such a
server, its memory included up to the benchmark servers' memory per thread; the RAM estimate then
charges only the memory the job holds beyond that allowance, never the same memory twice.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil

from ecopipe.cpu_coefficients import CpuPowerCoefficients, cpu_power_coefficients, power_per_thread_w
from ecopipe.cpu_identity import identify
from ecopipe.cpuinfo import named_cpu, read_cpuinfo
from ecopipe.hardware_table import match_hardware
from ecopipe.sensors.base import Component, EnergySensor, Found, Request, Source
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.sensors.cpu_share import visible_cpus

log = logging.getLogger(__name__)

# (low, point, high) watts per three bounds, the arithmetic of every estimate below.
Band3 = tuple[float, float, float]

# DRAM power per GiB held. Point and high: 3 W per 8 GB of DDR3/DDR4 (Crucial's "How much power does
# memory use?" FAQ, until 2024), CodeCarbon v2's RAM.power_per_GB = 3 / 8: a datasheet figure under
# load, the one the other tools use. Low: measured DRAM background power, 0.02-0.08 W/GB (Green
# Algorithms calculator issue #14 and pull request #38), its low end.
RAM_W_PER_GB: Band3 = (0.02, 3 / 8, 3 / 8)
RAM_SOURCE = "0.02 W/GB, DRAM background on a meter (Green Algorithms #14, #38), to 0.375 (Crucial)"

BYTES_PER_GB = 1024**3  # GiB, as CodeCarbon's ram_total_size


def _tdp_check(model_name: str, coefficients: CpuPowerCoefficients) -> str:
    """The hardware table's TDP per thread for this model, beside the band's full-load range."""
    row = match_hardware(model_name)
    if row is None or row.kind != "cpu" or not row.tdp_w or not row.threads_per_package:
        return ""
    low, _, high = coefficients.full_w
    return (
        f"cross-check: {row.name} TDP {row.tdp_w:g} W / {row.threads_per_package} threads = "
        f"{row.tdp_w / row.threads_per_package:.3g} W per thread for the package alone (band at full "
        f"load {low:.3g}-{high:.3g})"
    )


def cpu_power(cpu_model: str | None = None, microarch: str | None = None) -> CpuPower:
    """This machine's CPU, identified from /proc/cpuinfo, and its SPECpower coefficients.

    `cpu_model` (hardware.cpu_model) replaces the CPU by a named one, identified from its name alone
    (a what-if estimate); `microarch` (hardware.cpu_microarch) names the microarchitecture outright.
    An unknown name raises ValueError from cpu_identity.identify.
    """
    info = read_cpuinfo()
    if cpu_model is not None:  # the named CPU alone: its vendor from its name, no ids, no flags
        info = named_cpu(cpu_model)
    identity = identify(info, microarch)
    coefficients = cpu_power_coefficients(identity)
    return CpuPower(identity, coefficients, _tdp_check(info.model_name, coefficients))


@dataclass(frozen=True)
class CpuShare:
    """The part of the server a job may use: the hardware threads it may run on."""

    power: CpuPower
    threads: float  # CPUs the job may use: affinity capped by the cgroup quota
    note: str  # where the thread count came from

    def watts(self, utilisation: float) -> Band3:
        """(low, point, high) watts of the job's threads at a utilisation of them in [0, 1]."""
        low, point, high = power_per_thread_w(self.power.coefficients, utilisation)
        return low * self.threads, point * self.threads, high * self.threads

    @property
    def memory_allowance_gb(self) -> float:
        """The memory the SPECpower figure already counts for these threads (the servers' GB per thread)."""
        return self.power.coefficients.memory_gb_per_thread * self.threads


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
    """A model integrated between reads, on the snapshot's timestamp (see read_joules_at), at three bounds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None  # time of the previous read
        self._joules = np.zeros(3)  # low, point, high
        self.excluded: set[int] = set()

    @abstractmethod
    def _start(self) -> None:
        """Take the model's origin state (CPU seconds, memory) at open."""

    @abstractmethod
    def _advance(self, dt: float) -> Band3:
        """(low, point, high) energy over the `dt` seconds since the previous read; updates the state."""

    def open(self) -> None:
        with self._lock:
            self._start()
            self._last, self._joules = self._clock(), np.zeros(3)

    def read_band_at(self, now: float) -> tuple[float, float, float]:
        with self._lock:
            if self._last is None:
                raise RuntimeError(f"{self!r} read before open()")
            dt = now - self._last
            if dt > 0:
                self._joules = self._joules + np.asarray(self._advance(dt))
                self._last = now
            low, point, high = (float(j) for j in self._joules)
            return low, point, high

    def read_joules_at(self, now: float) -> float:
        return self.read_band_at(now)[1]

    def read_joules(self) -> float:
        return self.read_joules_at(self._clock())

    def exclude_process(self, pid: int) -> None:
        self.excluded.add(pid)


class EstimatedCpuSensor(_ModelSensor):
    """CPU energy = the job's threads x W per thread at their mean utilisation between reads x time.

    Utilisation = the job's CPU seconds / (elapsed x its visible threads). The meter reads at window
    edges, so each window is charged at its own mean utilisation: the idle baseline near the idle
    figure, a busy window near full load. Reads never sleep nor call psutil with interval=.
    """

    component = Component.CPU
    source = Source.ESTIMATED_SPECPOWER
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
        self.method = f"{share.power.note}; x {share.threads:g} threads ({share.note})"

    def _start(self) -> None:
        self._cpu = self._cpu_seconds(self.excluded)

    def trace_watts(self, samples: pd.DataFrame) -> pd.Series:
        """The point estimate at the utilisation the trace saw: its `process.cpu_pct` (100 = one
        thread busy; the job's main process, without its children) over the job's threads."""
        utilisation = samples["process.cpu_pct"] / 100 / self.share.threads
        return utilisation.map(lambda u: self.share.watts(u)[1])

    def _advance(self, dt: float) -> Band3:
        cpu = max(self._cpu, self._cpu_seconds(self.excluded))  # a child exiting unreaped can dip the sum
        utilisation = (cpu - self._cpu) / (dt * self.share.threads)
        self._cpu = cpu
        low, point, high = self.share.watts(utilisation)
        return low * dt, point * dt, high * dt


class EstimatedRamSensor(_ModelSensor):
    """RAM energy = W per GB x the gigabytes beyond `allowance_gb` x time, read at each read (trapezoid).

    `gigabytes` is the memory the job's processes hold (source estimated_rss) or the machine's
    installed memory (estimated_per_gb, constant). `allowance_gb` is the memory a SPECpower-based CPU
    estimate already counts (0 beside a measured CPU).
    """

    component = Component.RAM
    device = "ram"
    resolution_s = 0.0  # a model: exact at any instant

    def __init__(
        self,
        gigabytes: Callable[[Collection[int]], float],
        source: Source,
        method: str,
        allowance_gb: float = 0.0,
        watts_per_gb: Band3 = RAM_W_PER_GB,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if min(watts_per_gb) < 0 or allowance_gb < 0:
            raise ValueError(
                f"need non-negative watts_per_gb and allowance, got {watts_per_gb}, {allowance_gb}"
            )
        super().__init__(clock)
        self.watts_per_gb, self._gigabytes, self.source = watts_per_gb, gigabytes, source
        self.allowance_gb = allowance_gb
        beyond = f" beyond {allowance_gb:.3g} GiB counted in the cpu figure" if allowance_gb else ""
        self.method = f"{method}{beyond} x {watts_per_gb[1]:.3g} W/GB ({RAM_SOURCE})"
        self._gb = 0.0

    @classmethod
    def installed(
        cls, gigabytes: float, allowance_gb: float = 0.0, clock: Callable[[], float] = time.perf_counter
    ) -> EstimatedRamSensor:
        """The whole machine's memory, charged to the job (constant power): the machine-wide view."""
        method = f"{gigabytes:.1f} GiB installed"
        return cls(lambda _exclude: gigabytes, Source.ESTIMATED_PER_GB, method, allowance_gb, clock=clock)

    @classmethod
    def held_by_job(
        cls,
        allowance_gb: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        gigabytes: Callable[[Collection[int]], float] = lambda exclude: process_memory_gb(exclude=exclude),
    ) -> EstimatedRamSensor:
        """The memory the job's processes hold (resident set), the sampler left out."""
        method = "resident memory of the job's processes"
        return cls(gigabytes, Source.ESTIMATED_RSS, method, allowance_gb, clock=clock)

    def trace_watts(self, samples: pd.DataFrame) -> pd.Series:
        """The point estimate at the memory the trace saw (`process.rss_mb`, the job's main process),
        or at the installed memory (constant) for the machine-wide estimate."""
        if self.source is Source.ESTIMATED_RSS:
            gigabytes = samples["process.rss_mb"] * 2**20 / BYTES_PER_GB
        else:
            gigabytes = pd.Series(self._gigabytes(self.excluded), index=samples.index)
        return (gigabytes - self.allowance_gb).clip(lower=0) * self.watts_per_gb[1]

    def _charged(self) -> float:
        return max(0.0, self._gigabytes(self.excluded) - self.allowance_gb)

    def _start(self) -> None:
        self._gb = self._charged()

    def _advance(self, dt: float) -> Band3:
        gb = self._charged()
        mean_gb = (self._gb + gb) / 2
        self._gb = gb
        low, point, high = (w * mean_gb * dt for w in self.watts_per_gb)
        return low, point, high


def _estimate(found: Found, sensor: EnergySensor) -> None:
    """Add an estimate for what no counter covers, with the warning that says so, and why."""
    sensor.set_aside = found.set_aside.get(sensor.component, "")
    sensor.fallback = found.fallback.get(sensor.component, "")
    why = found.why.get(sensor.component, "no vendor measures it")
    label = sensor.component.value.upper()
    log.warning("%s energy is an ESTIMATE (%s), %s: %s", label, sensor.source.value, why, sensor.method)
    found.sensors.append(sensor)


def discover_cpu(request: Request, found: Found) -> None:
    """The job's threads' share of a SPECpower server, where no vendor before measures the CPU.

    The threads are `job_cpus`, else the affinity mask capped by the cgroup quota.
    """
    if found.covers(Component.CPU):
        return
    visible = visible_cpus()
    threads = request.job_cpus if request.job_cpus is not None else visible.count
    note = "given" if request.job_cpus is not None else visible.note
    _estimate(found, EstimatedCpuSensor(CpuShare(request.cpu_power or cpu_power(), threads, note)))


def discover_ram(request: Request, found: Found) -> None:
    """The memory the job holds (or the machine's, on request) x W/GB, where no vendor before measures
    the RAM, beyond what a SPECpower CPU estimate already counts."""
    if found.covers(Component.RAM):
        return
    cpu = [s for s in found.sensors if isinstance(s, EstimatedCpuSensor)]
    allowance_gb = sum(s.share.memory_allowance_gb for s in cpu)
    if request.ram_estimate == "machine":
        sensor = EstimatedRamSensor.installed(psutil.virtual_memory().total / BYTES_PER_GB, allowance_gb)
    else:
        sensor = EstimatedRamSensor.held_by_job(allowance_gb)
    _estimate(found, sensor)
