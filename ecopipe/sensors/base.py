"""The one interface every energy sensor implements.

A sensor exposes a cumulative energy in joules that only grows while it is open. Windows are
differences of two reads, so the load phase, the idle baseline and every trial are measured by the
same arithmetic whatever the hardware (a counter register, an integrated power trace or an estimate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the GPU resolver imports this module with nothing but pynvml (a bare GPU image)
    import pandas as pd


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

    def probe_spec(self) -> dict[str, object] | None:
        """How the sampler's separate process rebuilds this sensor's power reading; None: not traced."""
        return None

    @property
    def label(self) -> str:
        return f"{self.component.value}:{self.device}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} source={self.source.value}>"
