"""The one interface every energy sensor implements.

A sensor exposes a cumulative energy in joules that only grows while it is open. Windows are
differences of two reads, so the load phase, the idle baseline and every trial are measured by the
same arithmetic whatever the hardware (a counter register, an integrated power trace or an estimate).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the GPU resolver imports this module with nothing but pynvml (a bare GPU image)
    import pandas as pd

    from ecopipe.sensors.cpu_power import CpuPower


class Component(StrEnum):
    GPU = "gpu"
    CPU = "cpu"
    RAM = "ram"


class Source(StrEnum):
    """How an energy figure was obtained; travels with every number into MLflow and the tables."""

    NVML_COUNTER = "nvml_counter"
    NVML_POWER_POLLING = "nvml_power_polling"  # the instantaneous power field
    # nvmlDeviceGetPowerUsage where the instant field is missing: a 1-s average on Ampere and newer, so
    # energy leaks across window edges; a measurement, but a lagged one
    NVML_AVG_POWER_POLLING = "nvml_avg_power_polling"
    RAPL = "rapl"
    # the job's threads' share of a server, SPECpower watts per thread of its microarchitecture
    ESTIMATED_SPECPOWER = "estimated_specpower"
    ESTIMATED_RSS = "estimated_rss"  # the memory the job's processes hold x W per GB
    ESTIMATED_PER_GB = "estimated_per_gb"  # the machine's installed memory x W per GB (opt-in)
    FAKE = "fake"  # test double for hardware this machine lacks; never used outside tests

    @property
    def is_measurement(self) -> bool:
        return self in _MEASUREMENTS


_MEASUREMENTS = frozenset(
    {Source.NVML_COUNTER, Source.NVML_POWER_POLLING, Source.NVML_AVG_POWER_POLLING, Source.RAPL}
)


# A whole-machine source charged by the job's share of busy CPU time carries this suffix (rapl_job_share).
JOB_SHARE_SUFFIX = "_job_share"
# A GPU counter that covers the whole physical GPU while the job holds a MIG instance of it.
WHOLE_GPU_SUFFIX = "_whole_gpu"

# The NVML sources a GPU is metered by, best first: the counter, else integrated instantaneous power.
GPU_SOURCES = (Source.NVML_COUNTER, Source.NVML_POWER_POLLING)


class SensorUnavailable(RuntimeError):
    """The hardware or library behind a sensor cannot be used here; discovery tries the next one."""


class EnergySensor(ABC):
    """A cumulative energy reading for one device (one GPU, one RAPL package, the process's CPU...)."""

    component: Component
    source: Source
    device: str  # "gpu0", "package-0", "cpu", ...
    resolution_s: float  # how often the underlying value refreshes
    method: str = ""  # for a model (an estimate): how its figure is made, in one line
    set_aside: str = ""  # the readable source this estimate stands in for on request (monitor.rapl=false)
    fallback: str = ""  # why this estimate stands in for a counter the machine has (it could not be read)
    # Under MIG, why the GPU reading is the whole physical GPU's, every instance's work included; "": own
    whole_gpu: str = ""
    # Counts every process on the machine (a RAPL zone), not the job's device alone: a meter charges the
    # job its share of it (EnergyMeter, monitor.rapl_attribution)
    whole_machine: bool = False

    def open(self) -> None:  # noqa: B027 - optional hook: polling sensors start their thread here
        """Start whatever the sensor needs before its first read."""

    def close(self) -> None:  # noqa: B027
        """Release threads and handles."""

    @abstractmethod
    def read_joules(self) -> float:
        """Energy in joules since an arbitrary origin fixed at open(); monotonic while open."""

    def read_joules_at(self, now: float) -> float:
        """The same read, for a snapshot taken at `now` on the meter's clock.

        Counters ignore `now`: their value is what the hardware holds. A model (an estimate, the fake
        GPU) computes energy from elapsed time, so it must use the snapshot's one timestamp: reading its
        own clock a few milliseconds later at each edge skews a constant-power window against its
        duration (a 2% idle/trial difference seen on review).
        """
        return self.read_joules()

    def read_band_at(self, now: float) -> tuple[float, float, float]:
        """(low, point, high) joules at `now`: a model's reads at the ends of its coefficients' range.

        A measurement has no such range: it reads the same at all three.
        """
        joules = self.read_joules_at(now)
        return joules, joules, joules

    def exclude_process(self, pid: int) -> None:  # noqa: B027 - only process-based models use it
        """Leave process `pid` (the sampler, a child of the job) out of what this sensor charges."""

    def power_watts(self) -> float | None:
        """Instantaneous power for the sampler's trace, or None where the sensor has no such field."""
        return None

    def trace_watts(self, samples: pd.DataFrame) -> pd.Series | None:
        """A model's power at each of a trace's samples, from the process readings the trace holds;
        None for a counter, which the sampler reads itself (probe_spec)."""
        return None

    def probe_args(self) -> dict[str, object] | None:
        """The JSON arguments from which power_reader rebuilds this sensor's power reading; None: not
        traced."""
        return None

    @classmethod
    def power_reader(cls, **args: Any) -> Callable[[], float | None]:
        """This sensor's power reading, rebuilt in the sampler's process from its probe_args."""
        raise NotImplementedError(f"{cls.__name__} gives probe_args but no power_reader")

    def probe_spec(self) -> dict[str, object] | None:
        """How the sampler's separate process rebuilds this sensor's power reading; None: not traced.

        The spec names, by its path, the class that defines the reader (the vendor's, for a subclass
        that only changes how energy is read), so that process needs the vendor's module and nothing
        else: no second copy of discovery's choice, and a new vendor is traced as it is.
        """
        args = self.probe_args()
        if args is None:
            return None
        vendor = next(c for c in type(self).__mro__ if "power_reader" in vars(c))
        return {"sensor": class_path(vendor), "args": args, "label": self.label}

    @property
    def label(self) -> str:
        return f"{self.component.value}:{self.device}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} source={self.source.value}>"


def class_path(cls: type) -> str:
    """'module:QualName', from which load_class imports the class in another process."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(path: str) -> type:
    module, _, name = path.partition(":")
    found = getattr(importlib.import_module(module), name)
    if not isinstance(found, type):
        raise ValueError(f"{path} is not a class")
    return found


def rebuild_power_reader(spec: Mapping[str, Any]) -> Callable[[], float | None]:
    """The power reading an EnergySensor.probe_spec describes, rebuilt in the sampler's process."""
    sensor = load_class(spec["sensor"])
    if not issubclass(sensor, EnergySensor):
        raise ValueError(f"{spec['sensor']} is not an EnergySensor")
    return sensor.power_reader(**spec["args"])


# ---------------------------------------------------------------- the vendor boundary of discovery


@dataclass(frozen=True)
class Request:
    """What discovery is asked for (discovery.discover_sensors' arguments, defaults resolved)."""

    gpu_indices: tuple[int, ...]
    gpu_sources: tuple[Source, ...]  # the NVML sources to try, best first
    fake_gpu_watts: float | None  # a simulated GPU instead of NVML (tests/CI only)
    powercap_root: str | Path
    rapl: bool  # False: readable RAPL is set aside (monitor.rapl=false)
    cpu_power: CpuPower | None  # what the CPU estimate charges; None: this machine's CPU
    job_cpus: float | None
    ram_estimate: str  # job | machine
    whole_gpu: str  # under MIG, why the GPU sensors read the whole physical GPU; "": their own


@dataclass
class Found:
    """What the vendors asked so far found, and what they leave to an estimate, and why."""

    sensors: list[EnergySensor] = field(default_factory=list)
    # Per component, said by a measuring vendor that left it: why no counter measures it (the estimate's
    # warning), the readable source it set aside on request, and why a counter the machine has failed.
    why: dict[Component, str] = field(default_factory=dict)
    set_aside: dict[Component, str] = field(default_factory=dict)
    fallback: dict[Component, str] = field(default_factory=dict)

    def covers(self, component: Component, device: str | None = None) -> bool:
        """Whether a vendor before has a sensor for `component` (for that `device`, where given)."""
        return any(s.component is component and device in (None, s.device) for s in self.sensors)


# A vendor backend: adds to `found` the sensors it has for what the vendors before it left.
Discover = Callable[[Request, Found], None]
