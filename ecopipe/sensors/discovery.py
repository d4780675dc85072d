"""Pick the best available sensor for every GPU, the CPU and the RAM; never crash on missing hardware.

Order: GPU: NVML counter > NVML power polling > nothing (warned). CPU: RAPL packages > the job's
threads' share of a server, from SPECpower watts per thread of the CPU's microarchitecture. RAM: RAPL
dram (only where every package has one) > the memory the job holds x W/GB (or the machine's installed
memory, on request), beyond what a SPECpower CPU figure already counts. Each degradation is logged as a
warning, one line saying what is missing and why, because a degraded source changes what the numbers
mean.

Each vendor backend is one module behind EnergySensor with a `discover` function; VENDORS orders them,
and each adds sensors for what the ones before it left. Adding a vendor is its module plus one line
there; the sampler's process rebuilds a sensor from its class path (EnergySensor.probe_spec), so it
needs nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ecopipe.sensors import estimated, fake, nvml, rapl
from ecopipe.sensors.base import GPU_SOURCES, Discover, EnergySensor, Found, Request, Source, class_path
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.sensors.rapl import POWERCAP_ROOT

# The vendor backends, best first: each covers what the ones before it left (a GPU, the CPU, the RAM).
VENDORS: list[Discover] = [
    fake.discover,  # simulated GPUs, only where asked for (tests/CI)
    nvml.discover,  # NVIDIA GPUs: the energy counter, else integrated instantaneous power
    rapl.discover,  # CPU packages, and DRAM where every package has a zone
    estimated.discover_cpu,  # the CPU no counter covers: the job's threads' share of a SPECpower server
    estimated.discover_ram,  # the RAM no counter covers: the memory held x W/GB
]

RAM_ESTIMATES = ("job", "machine")


def discover_sensors(
    gpu_indices: Sequence[int],
    cpu_power: CpuPower | None = None,
    fake_gpu_watts: float | None = None,
    powercap_root: str | Path | None = None,
    gpu_sources: Sequence[Source] = GPU_SOURCES,
    *,
    job_cpus: float | None = None,
    ram_estimate: str = "job",
    rapl: bool = True,
    whole_gpu: str | None = None,
) -> list[EnergySensor]:
    """Sensors for the given GPUs, the CPU and the RAM, best source first.

    The caller must open() every returned sensor before its first read and close() it afterwards
    (the polling sensor runs a thread; NVML holds a reference). `fake_gpu_watts` replaces NVML by one
    FakeGpuSensor per index (tests/CI only); `gpu_sources` are the NVML sources to try, in order.
    Without RAPL, the CPU estimate charges the job's visible CPUs (`job_cpus`, else affinity capped by
    the cgroup quota) `cpu_power`'s watts per thread (default: this machine's CPU, identified from
    /proc/cpuinfo). `ram_estimate` is `job` (the memory the job holds) or `machine` (installed
    memory). `rapl=False` sets readable RAPL aside (monitor.rapl=false), so CPU and RAM are estimated:
    an estimate beside the counter on one host. `whole_gpu` (MIG) says why the GPUs' sensors read the
    whole physical GPU. `powercap_root` (default POWERCAP_ROOT) exists for tests.
    """
    if ram_estimate not in RAM_ESTIMATES:
        raise ValueError(f"ram_estimate={ram_estimate!r}; allowed: {', '.join(RAM_ESTIMATES)}")
    root = POWERCAP_ROOT if powercap_root is None else powercap_root  # read per call: tests may point it
    request = Request(
        tuple(gpu_indices), tuple(gpu_sources), fake_gpu_watts, root, rapl, cpu_power, job_cpus,
        ram_estimate, whole_gpu or "",
    )  # fmt: skip
    found = Found()
    for vendor in VENDORS:
        vendor(request, found)
    return found.sensors


def telemetry_specs(gpu_indices: Sequence[int]) -> list[dict[str, object]]:
    """How the sampler's process builds each GPU's telemetry (utilisation, memory, clocks): NVML's, the
    one vendor here that has it; a GPU without NVML is skipped there."""
    return [{"reader": class_path(nvml.NvmlTelemetry), "args": {"index": i}} for i in gpu_indices]
