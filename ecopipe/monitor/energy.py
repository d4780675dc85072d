"""Energy by component with the arithmetic the formulas need, and windows read from sensors.

Reads happen only at a window's edges, right after synchronising the accelerator, so nothing runs
on the measured path between them (DESIGN.md section 4).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING

from ecopipe.monitor.busy import CpuReading, CpuTimes, job_share
from ecopipe.sensors.base import (
    GPU_SOURCES,
    JOB_SHARE_SUFFIX,
    WHOLE_GPU_SUFFIX,
    Component,
    EnergySensor,
    Source,
)

if TYPE_CHECKING:
    from ecopipe.sensors.cpu_power import CpuPower


@dataclass(frozen=True)
class Energy:
    """Joules per component. `Energy - Energy`, `Energy / n` and `Energy * k` read like the formulas."""

    gpu: float = 0.0
    cpu: float = 0.0
    ram: float = 0.0

    @property
    def total(self) -> float:
        return self.gpu + self.cpu + self.ram

    def _combine(self, other: Energy, op: Callable[[float, float], float]) -> Energy:
        return Energy(**{f.name: op(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def _scale(self, factor: float) -> Energy:
        return Energy(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def __add__(self, other: Energy) -> Energy:
        return self._combine(other, operator.add)

    def __sub__(self, other: Energy) -> Energy:
        return self._combine(other, operator.sub)

    def __mul__(self, factor: float) -> Energy:
        return self._scale(float(factor))

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Energy:
        return self._scale(1.0 / divisor)

    def with_share(self, share: float, components: Iterable[str]) -> Energy:
        """The named components multiplied by `share`, the others as they are."""
        named = set(components)
        return Energy(
            **{f.name: getattr(self, f.name) * (share if f.name in named else 1.0) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, float]:
        """Components and total, in the unit of the instance (J, or W for a power)."""
        return {"gpu": self.gpu, "cpu": self.cpu, "ram": self.ram, "total": self.total}


# A power draw is the same three numbers in watts; Energy's arithmetic serves both.
Power = Energy


class Bound(StrEnum):
    """Which end of an estimate's coefficient range a figure is computed at (DESIGN.md section 4).

    A measurement reads the same at every bound; an estimate is computed three times, with the low,
    the point and the high coefficients of its model, from the same utilisation and memory readings.
    """

    LOW = "low"
    POINT = "point"
    HIGH = "high"


@dataclass(frozen=True)
class Window:
    """What the sensors saw between two edges, and when (wall clock) the edges were read.

    `low` / `high`: the energy at the ends of the estimates' coefficient ranges; None where every
    sensor measures (the window then reads `energy` at every bound).
    `job_share`: the job's share of the machine's busy CPU time over the window, by which the `shared`
    components (read from whole-machine counters: RAPL) are charged; `machine` is the window's energy
    with those components whole. None / () where no whole-machine counter was shared.
    """

    energy: Energy
    duration_s: float
    # Unix time of the edges, so another process's readings can be compared over the same window.
    start_unix_s: float = float("nan")
    end_unix_s: float = float("nan")
    low: Energy | None = None
    high: Energy | None = None
    job_share: float | None = None
    shared: tuple[str, ...] = ()
    machine: Energy | None = None

    def baseline(self, idle_power: Power) -> Energy:
        """An idle baseline (a whole-machine power) over this window, charged as the window's energy
        is: the shared components at the job's share, so that net = share x (machine - idle)."""
        idle = idle_power * self.duration_s
        return idle if self.job_share is None else idle.with_share(self.job_share, self.shared)

    def at(self, bound: Bound) -> Energy:
        other = {Bound.LOW: self.low, Bound.HIGH: self.high}.get(bound)
        return self.energy if other is None else other

    @property
    def power(self) -> Power:
        return self.power_at(Bound.POINT)

    def power_at(self, bound: Bound) -> Power:
        return self.at(bound) / self.duration_s if self.duration_s > 0 else Power()


@dataclass(frozen=True)
class Snapshot:
    time_s: float  # the meter's monotonic clock: durations
    unix_s: float  # wall clock, read with time_s: edges other processes can line up with
    joules: tuple[float, ...]  # one per sensor, in the meter's sensor order
    # The same reads at the low and high ends of each sensor's range; None: equal to `joules`.
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    cpu: CpuReading | None = None  # the job's and the machine's CPU time, where a counter is shared


class EnergyMeter:
    """Reads every sensor of a job at once; windows are differences of two snapshots.

    `unmetered`: component -> why the job's device of it has no sensor (one line, e.g. a MIG GPU).
    `cpu_times`: given, a whole-machine counter (RAPL) charges each window the job's share of the
    machine's busy CPU time (busy.job_share); the whole figure stays in `Window.machine`.
    """

    def __init__(
        self,
        sensors: Iterable[EnergySensor],
        synchronize: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.perf_counter,
        unmetered: Mapping[str, str] | None = None,
        cpu_times: CpuTimes | None = None,
    ) -> None:
        self.sensors = list(sensors)
        self._shared = [s.whole_machine and cpu_times is not None for s in self.sensors]
        self._cpu_times = cpu_times if any(self._shared) else None
        self._synchronize = synchronize
        self.clock = clock
        self.unmetered = dict(unmetered or {})
        # Wall time of an edge = its monotonic reading + one offset, so that end - start of two
        # edges is the window's duration exactly; reading time.time() at each edge would add the
        # scheduling gap between the two clock reads (milliseconds on a busy machine).
        self._unix_offset_s = time.time() - clock()

    @property
    def set_aside(self) -> dict[str, str]:
        """Component -> the readable source its estimate stands in for on request (monitor.rapl=false)."""
        return {s.component.value: s.set_aside for s in self.sensors if s.set_aside}

    @property
    def whole_gpu(self) -> dict[str, str]:
        """Component -> why its reading is the whole physical GPU's (MIG), not the job's instance's."""
        return {s.component.value: s.whole_gpu for s in self.sensors if s.whole_gpu}

    @property
    def fallbacks(self) -> dict[str, str]:
        """Component -> why its estimate stands in for a counter the machine has but could not read."""
        return {s.component.value: s.fallback for s in self.sensors if s.fallback}

    @property
    def sources(self) -> dict[str, str]:
        """Component -> how its energy was obtained; '+'-joined where sensors of one component differ."""
        found: dict[str, list[str]] = {c.value: [] for c in Component}
        for sensor, shared in zip(self.sensors, self._shared, strict=True):
            names = found[sensor.component.value]
            name = sensor.source.value + (JOB_SHARE_SUFFIX if shared else "")
            name += WHOLE_GPU_SUFFIX if sensor.whole_gpu else ""
            if name not in names:
                names.append(name)
        return {component: "+".join(names) if names else "none" for component, names in found.items()}

    @property
    def measured(self) -> dict[str, bool]:
        """Component -> True only where every sensor of it is a measurement, not an estimate."""
        result = {c.value: False for c in Component}
        for component in Component:
            own = [s for s in self.sensors if s.component is component]
            result[component.value] = bool(own) and all(s.source.is_measurement for s in own)
        return result

    @property
    def resolution_s(self) -> dict[str, float]:
        """Component -> the coarsest refresh period of its sensors (0 where it has none)."""
        return {
            c.value: max((s.resolution_s for s in self.sensors if s.component is c), default=0.0)
            for c in Component
        }

    def open(self) -> None:
        for sensor in self.sensors:
            sensor.open()

    def close(self) -> None:
        for sensor in self.sensors:
            sensor.close()

    @property
    def methods(self) -> dict[str, str]:
        """Component -> how its estimate is made ('; '-joined), for components that have one."""
        found: dict[str, list[str]] = {}
        for sensor in self.sensors:
            if sensor.method and sensor.method not in found.setdefault(sensor.component.value, []):
                found[sensor.component.value].append(sensor.method)
        return {component: "; ".join(methods) for component, methods in found.items() if methods}

    def snapshot(self) -> Snapshot:
        # Without a synchronize the GPU may still be running queued kernels: a window then reads 0 J.
        self._synchronize()
        # One timestamp for the whole snapshot: models compute their energy at it (read_joules_at).
        now = self.clock()
        reads = [sensor.read_band_at(now) for sensor in self.sensors]
        point = tuple(r[1] for r in reads)
        low, high = tuple(r[0] for r in reads), tuple(r[2] for r in reads)
        banded = low != point or high != point
        cpu = self._cpu_times.read() if self._cpu_times is not None else None
        return Snapshot(
            now, now + self._unix_offset_s, point, low if banded else None, high if banded else None, cpu
        )

    @property
    def shared_components(self) -> tuple[str, ...]:
        """Components read from a whole-machine counter that windows charge at the job's share."""
        found = {s.component.value for s, shared in zip(self.sensors, self._shared, strict=True) if shared}
        return tuple(c.value for c in Component if c.value in found)

    def since(self, start: Snapshot) -> Window:
        end = self.snapshot()
        return self.between(start, end)

    def _difference(
        self, before: tuple[float, ...], after: tuple[float, ...], share: float | None = None
    ) -> Energy:
        """Per component, the sensors' joules between two reads; a shared sensor's at `share`."""
        per_component = {c.value: 0.0 for c in Component}
        for sensor, shared, first, last in zip(self.sensors, self._shared, before, after, strict=True):
            factor = share if shared and share is not None else 1.0
            per_component[sensor.component.value] += (last - first) * factor
        return Energy(**per_component)

    def between(self, start: Snapshot, end: Snapshot, attribute: bool = True) -> Window:
        """The window between two snapshots; `attribute=False` leaves whole-machine counters whole (the
        idle baseline: the machine's idle draw, charged to each trial at that trial's share)."""
        share = job_share(start.cpu, end.cpu) if attribute and start.cpu and end.cpu else None
        ends: dict[str, Energy | None] = {"low": None, "high": None}
        for bound in ends:
            first, last = getattr(start, bound), getattr(end, bound)
            if first is not None or last is not None:
                ends[bound] = self._difference(first or start.joules, last or end.joules, share)
        return Window(
            self._difference(start.joules, end.joules, share),
            end.time_s - start.time_s,
            start.unix_s,
            end.unix_s,
            **ends,
            job_share=share,
            shared=self.shared_components if share is not None else (),
            machine=self._difference(start.joules, end.joules) if share is not None else None,
        )


def machine_meter(
    gpu_indices: Sequence[int],
    fake_gpu_watts: float | None = None,
    synchronize: Callable[[], None] = lambda: None,
    gpu_sources: Sequence[Source] = GPU_SOURCES,
    cpu_power: CpuPower | None = None,
    ram_estimate: str = "job",
    rapl: bool = True,
    unmetered_gpu: str | None = None,
    rapl_job_share: bool = True,
    whole_gpu: str | None = None,
) -> EnergyMeter:
    """A meter over the best sensors this machine has for the given GPUs, its CPU and its RAM (not opened).

    `gpu_sources` narrows the NVML sources tried, best first (`monitor.gpu_sensor`); `cpu_power` is
    what a CPU estimate charges (default: this machine's CPU, identified; hardware.cpu_model and
    hardware.cpu_microarch change it); `ram_estimate` is monitor.ram_estimate (job | machine);
    `rapl=False` (monitor.rapl) estimates CPU and RAM even where RAPL is readable; `unmetered_gpu`
    says why the job's own GPU is not among `gpu_indices`; `rapl_job_share` (monitor.rapl_attribution
    = job_share) charges RAPL at the job's share of the machine's busy CPU time, else whole;
    `whole_gpu` says why the GPU sensors read the whole physical GPU (a MIG instance's job).
    """
    from ecopipe.sensors.discovery import discover_sensors

    sensors = discover_sensors(
        gpu_indices,
        cpu_power,
        fake_gpu_watts,
        gpu_sources=gpu_sources,
        ram_estimate=ram_estimate,
        rapl=rapl,
        whole_gpu=whole_gpu,
    )
    return EnergyMeter(
        sensors,
        synchronize=synchronize,
        unmetered={Component.GPU.value: unmetered_gpu} if unmetered_gpu else None,
        cpu_times=CpuTimes() if rapl_job_share else None,
    )
