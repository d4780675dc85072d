"""Pick the best available sensor for every GPU, the CPU and the RAM; never crash on missing hardware.

Order: GPU: NVML counter > NVML instantaneous-power polling > nothing (warned). CPU: RAPL packages >
TDP estimate. RAM: RAPL dram > per-GB estimate. Each degradation is logged as a warning, one line
saying what is missing and why, because a degraded source changes what the numbers mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import psutil

from ecopipe.sensors.base import GPU_SOURCES, Component, EnergySensor, SensorUnavailable, Source
from ecopipe.sensors.estimated import (
    BYTES_PER_GB,
    RAM_W_PER_GB,
    EstimatedCpuSensor,
    EstimatedRamSensor,
    cpu_estimate_defaults,
)
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.nvml import NvmlCounterSensor, NvmlPowerPollingSensor, NvmlUnavailable
from ecopipe.sensors.rapl import POWERCAP_ROOT, discover_rapl_zones

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


def discover_sensors(
    gpu_indices: list[int],
    cpu_model: str | None,
    cpu_tdp_w: float | None,
    fake_gpu_watts: float | None = None,
    powercap_root: str | Path = POWERCAP_ROOT,
    gpu_sources: Sequence[Source] = GPU_SOURCES,
) -> list[EnergySensor]:
    """Sensors for the given GPUs, the CPU and the RAM, best source first.

    The caller must open() every returned sensor before its first read and close() it afterwards
    (the polling sensor runs a thread; NVML holds a reference). `fake_gpu_watts` replaces NVML by one
    FakeGpuSensor per index (tests/CI only); `gpu_sources` are the NVML sources to try, in order.
    `cpu_tdp_w` (e.g. looked up from `cpu_model`) feeds the CPU estimate when RAPL is missing;
    `powercap_root` exists for tests.
    """
    sensors: list[EnergySensor] = []
    for index in gpu_indices:
        if fake_gpu_watts is not None:
            sensors.append(FakeGpuSensor(fake_gpu_watts, device=f"gpu{index}"))
            continue
        gpu = _gpu_sensor(index, gpu_sources)
        if gpu is not None:
            sensors.append(gpu)

    try:
        zones = discover_rapl_zones(powercap_root)
    except SensorUnavailable as err:
        log.warning("RAPL unusable: %s", err)
        zones = []
    cpu = [z for z in zones if z.component is Component.CPU]
    ram = [z for z in zones if z.component is Component.RAM]

    if cpu:
        sensors += cpu
    else:
        n_cores = psutil.cpu_count(logical=True) or 0
        tdp, idle, note = cpu_estimate_defaults(n_cores, cpu_tdp_w)
        log.warning(
            "CPU energy is an ESTIMATE (estimated_tdp), no readable RAPL package under %s; CPU %r: %s",
            powercap_root,
            cpu_model or "unknown model",
            note,
        )
        sensors.append(EstimatedCpuSensor(tdp, idle, max(n_cores, 1)))

    if ram:
        sensors += ram
    else:
        gb = psutil.virtual_memory().total / BYTES_PER_GB
        log.warning(
            "RAM energy is an ESTIMATE (estimated_per_gb), no RAPL dram zone: %.3f W/GB x %.1f GiB = %.1f W",
            RAM_W_PER_GB,
            gb,
            RAM_W_PER_GB * gb,
        )
        sensors.append(EstimatedRamSensor(RAM_W_PER_GB, gb))
    return sensors
