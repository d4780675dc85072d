"""Pick the best available sensor for every GPU, the CPU and the RAM; never crash on missing hardware.

Order: GPU: NVML counter > NVML power polling > nothing (warned). CPU: RAPL packages > the job's
threads' share of a server, from SPECpower watts per thread of the CPU's microarchitecture. RAM: RAPL
dram (only where every package has one) > the memory the job holds x W/GB (or the machine's installed
memory, on request), beyond what a SPECpower CPU figure already counts. Each degradation is logged as a
warning, one line saying what is missing and why, because a degraded source changes what the numbers
mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import psutil

from ecopipe.sensors.base import GPU_SOURCES, Component, EnergySensor, SensorUnavailable, Source
from ecopipe.sensors.cpu_share import visible_cpus
from ecopipe.sensors.estimated import (
    BYTES_PER_GB,
    CpuPower,
    CpuShare,
    EstimatedCpuSensor,
    EstimatedRamSensor,
)
from ecopipe.sensors.estimated import (
    cpu_power as this_cpu_power,
)
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.nvml import NvmlCounterSensor, NvmlPowerPollingSensor, NvmlUnavailable
from ecopipe.sensors.rapl import POWERCAP_ROOT, RaplSensor, discover_rapl_zones

log = logging.getLogger(__name__)

_NVML_SENSORS = {Source.NVML_COUNTER: NvmlCounterSensor, Source.NVML_POWER_POLLING: NvmlPowerPollingSensor}


def _gpu_sensor(index: int, sources: Sequence[Source]) -> EnergySensor | None:
    """The first of `sources` (NVML counter, power polling) that works on this GPU, or None (warned)."""
    for position, source in enumerate(sources):
        last = position + 1 == len(sources)
        then = "GPU energy NOT measured" if last else f"falling back to {sources[position + 1].value}"
        try:
            return _NVML_SENSORS[source](index)
        except NvmlUnavailable as err:  # no library/driver: every NVML sensor would fail the same way
            log.warning("gpu%d: %s; GPU energy NOT measured for this device", index, err)
            return None
        except Exception as err:  # SensorUnavailable, or anything a driver/binding mismatch throws
            log.warning("gpu%d: %s unavailable (%s); %s", index, source.value, err, then)
    return None


RAM_ESTIMATES = ("job", "machine")
RAPL_SET_ASIDE = "RAPL set aside on request (monitor.rapl=false)"


def _dram_on_every_package(zones: Sequence[RaplSensor]) -> bool:
    """RAM is measured only where every package has a dram zone: otherwise some memory is left out."""
    packages = sum(z.component is Component.CPU for z in zones)
    return packages > 0 and sum(z.component is Component.RAM for z in zones) == packages


def _readable_rapl(powercap_root: str | Path, unreadable_dram: dict[str, str]) -> list[RaplSensor]:
    try:
        return discover_rapl_zones(powercap_root, unreadable_dram=unreadable_dram)
    except SensorUnavailable as err:
        log.warning("RAPL unusable: %s", err)
        return []


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
    sensors: list[EnergySensor] = []
    for index in gpu_indices:
        if fake_gpu_watts is not None:
            sensors.append(FakeGpuSensor(fake_gpu_watts, device=f"gpu{index}"))
            continue
        gpu = _gpu_sensor(index, gpu_sources)
        if gpu is not None:
            gpu.whole_gpu = whole_gpu or ""
            sensors.append(gpu)

    root = POWERCAP_ROOT if powercap_root is None else powercap_root  # read per call: tests may point it
    unreadable_dram: dict[str, str] = {}
    readable = _readable_rapl(root, unreadable_dram)
    # Set aside only what is there: on a host without RAPL, monitor.rapl=false changes nothing.
    aside_cpu = not rapl and any(z.component is Component.CPU for z in readable)
    aside_ram = aside_cpu and _dram_on_every_package(readable)
    zones = readable if rapl else []  # never opened: nothing to close
    cpu = [z for z in zones if z.component is Component.CPU]
    ram = [z for z in zones if z.component is Component.RAM]

    allowance_gb = 0.0  # memory a SPECpower CPU figure already counts
    if cpu:
        sensors += cpu
    else:
        visible = visible_cpus()
        threads = job_cpus if job_cpus is not None else visible.count
        note = "given" if job_cpus is not None else visible.note
        share = CpuShare(cpu_power or this_cpu_power(), threads, note)
        allowance_gb = share.memory_allowance_gb
        sensor = EstimatedCpuSensor(share)
        sensor.set_aside = Source.RAPL.value if aside_cpu else ""
        why = RAPL_SET_ASIDE if aside_cpu else f"no readable RAPL package under {root}"
        log.warning("CPU energy is an ESTIMATE (%s), %s: %s", sensor.source.value, why, sensor.method)
        sensors.append(sensor)

    if ram and _dram_on_every_package(zones):
        sensors += ram
    else:
        if ram:  # a dram zone on some packages only: the others' memory would be left out
            log.warning(
                "RAPL has a dram zone on %d of %d packages: RAM is estimated rather than half-measured",
                len(ram),
                len(cpu),
            )
        if ram_estimate == "machine":
            sensor = EstimatedRamSensor.installed(psutil.virtual_memory().total / BYTES_PER_GB, allowance_gb)
        else:
            sensor = EstimatedRamSensor.held_by_job(allowance_gb)
        sensor.set_aside = Source.RAPL.value if aside_ram else ""
        if unreadable_dram and not aside_ram:
            sensor.fallback = "RAPL dram unreadable: " + "; ".join(unreadable_dram.values())
        why = RAPL_SET_ASIDE if aside_ram else sensor.fallback or "no RAPL dram zone"
        log.warning("RAM energy is an ESTIMATE (%s), %s: %s", sensor.source.value, why, sensor.method)
        sensors.append(sensor)
    return sensors
