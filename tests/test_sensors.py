"""Sensor arithmetic against hand-computed values, and every fallback path without the hardware.

Clocks and CPU-time sources are injected, so nothing sleeps and no test depends on timing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ecopipe.sensors import rapl
from ecopipe.sensors.base import Component, SensorUnavailable, Source
from ecopipe.sensors.discovery import discover_sensors
from ecopipe.sensors.estimated import (
    RAM_W_PER_GB,
    EstimatedCpuSensor,
    EstimatedRamSensor,
    cpu_estimate_defaults,
    process_cpu_seconds,
)
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.nvml import (
    NvmlCounterSensor,
    NvmlPowerPollingSensor,
    nvml_device_info,
    trapezoid_joules,
)
from ecopipe.sensors.rapl import RaplSensor, counter_delta, discover_rapl_zones


def ticks(*values: float):
    """A clock returning the given instants in order (fails loudly if read more often than planned)."""
    it = iter(values)
    return lambda: next(it)


# ---------------------------------------------------------------- trapezoid


def test_trapezoid_on_recorded_trace():
    # segments: 0.1 s x (100+200)/2 = 15 J; 0.2 s x 200 = 40 J; 0.3 s x (200+50)/2 = 37.5 J
    assert trapezoid_joules([0.0, 0.1, 0.3, 0.6], [100.0, 200.0, 200.0, 50.0]) == pytest.approx(92.5)


def test_trapezoid_degenerate_and_invalid_traces():
    assert trapezoid_joules([], []) == 0.0
    assert trapezoid_joules([5.0], [300.0]) == 0.0
    with pytest.raises(ValueError):
        trapezoid_joules([0.0, 1.0], [1.0])
    with pytest.raises(ValueError):
        trapezoid_joules([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])


# ---------------------------------------------------------------- RAPL


def test_counter_delta_with_and_without_wrap():
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150  # 100 to the top, then 50 after the wrap
    assert counter_delta(7, 7, 1000) == 0
    with pytest.raises(ValueError):
        counter_delta(2000, 5, 1000)  # prev above the range: not a wrap


def make_zone(path: Path, name: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def fake_powercap(root: Path) -> Path:
    """Two sockets; socket 0 has core, uncore and dram subzones (nested as in sysfs), plus psys and mmio."""
    pkg0 = make_zone(root / "intel-rapl:0", "package-0", 1_000)
    make_zone(pkg0 / "intel-rapl:0:0", "core", 10)
    make_zone(pkg0 / "intel-rapl:0:1", "uncore", 20)
    make_zone(pkg0 / "intel-rapl:0:2", "dram", 30)
    make_zone(root / "intel-rapl:1", "package-1", 2_000)
    make_zone(root / "intel-rapl:1:0", "core", 40)  # flat layout (sysfs symlinks) works too
    make_zone(root / "intel-rapl:2", "psys", 50)
    make_zone(root / "intel-rapl-mmio:0", "package-0", 60)
    return root


def test_discover_rapl_keeps_packages_and_dram_only(tmp_path):
    zones = discover_rapl_zones(fake_powercap(tmp_path))
    assert [(z.component, z.device) for z in zones] == [
        (Component.CPU, "package-0"),
        (Component.RAM, "dram-0"),
        (Component.CPU, "package-1"),
    ]
    assert all(z.source is Source.RAPL for z in zones)


def test_rapl_missing_root_gives_no_zone(tmp_path):
    assert discover_rapl_zones(tmp_path / "absent") == []


def test_rapl_accumulates_across_wraps(tmp_path):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    sensor = RaplSensor(zone)
    sensor.open()
    (zone / "energy_uj").write_text("950000\n")
    assert sensor.read_joules() == pytest.approx(0.05)
    (zone / "energy_uj").write_text("100000\n")  # wrapped: +50_000 to the top, +100_000 after
    assert sensor.read_joules() == pytest.approx(0.2)
    (zone / "energy_uj").write_text("50000\n")  # wrapped again: +900_000 +50_000
    assert sensor.read_joules() == pytest.approx(1.15)


def test_rapl_power_from_counter_deltas(tmp_path):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    sensor = RaplSensor(zone, clock=ticks(10.0, 12.0))
    sensor.open()
    assert sensor.power_watts() is None  # first call: no interval yet
    (zone / "energy_uj").write_text("30000000\n")  # 30 J in 2 s
    assert sensor.power_watts() == pytest.approx(15.0)
    assert sensor.read_joules() == pytest.approx(30.0)


def test_rapl_permission_denied_says_how_to_fix(tmp_path, monkeypatch):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    real = rapl._read_text

    def deny(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", deny)
    with pytest.raises(SensorUnavailable, match="chmod") as info:
        RaplSensor(zone)
    assert "sudo" in str(info.value) and "5.10" in str(info.value)


def test_rapl_refuses_overlapping_zone(tmp_path):
    with pytest.raises(ValueError, match="core"):
        RaplSensor(make_zone(tmp_path / "intel-rapl:0:0", "core", 0))


# ---------------------------------------------------------------- estimates


def test_cpu_estimate_defaults_say_which_applied():
    tdp, idle, note = cpu_estimate_defaults(8, None)
    assert (tdp, idle) == pytest.approx((32.0, 3.2)) and "4 W x 8" in note
    tdp, idle, note = cpu_estimate_defaults(8, 65.0)
    assert (tdp, idle) == pytest.approx((65.0, 6.5)) and "as given" in note
    tdp, idle, note = cpu_estimate_defaults(0, None)
    assert (tdp, idle) == pytest.approx((85.0, 8.5)) and "85 W" in note


def test_estimated_cpu_energy_hand_computed():
    # open at t=100 s with 5 CPU-s used; read at t=102 s with 9 CPU-s used.
    # 10 W idle x 2 s + (100-10) W x 4 CPU-s / 4 cores = 20 + 90 = 110 J
    sensor = EstimatedCpuSensor(
        100.0, 10.0, 4, clock=ticks(100.0, 102.0, 104.0), cpu_seconds=ticks(5.0, 9.0, 8.5)
    )
    sensor.open()
    assert sensor.read_joules() == pytest.approx(110.0)
    # CPU seconds dipping (child exited unreaped) never makes the energy go down: 10 x 4 + 90 = 130 J
    assert sensor.read_joules() == pytest.approx(130.0)
    assert sensor.source is Source.ESTIMATED_TDP and sensor.component is Component.CPU


def test_estimated_cpu_power_is_mean_since_last_call():
    sensor = EstimatedCpuSensor(100.0, 10.0, 4, clock=ticks(0.0, 1.0, 3.0), cpu_seconds=ticks(0.0, 0.0, 4.0))
    sensor.open()
    assert sensor.power_watts() is None
    # from t=1 (10 J) to t=3: 30 J + 90 x 4 / 4 = 120 J -> 110 J over 2 s
    assert sensor.power_watts() == pytest.approx(55.0)


def test_process_cpu_seconds_reads_psutil():
    before = process_cpu_seconds()
    sum(i * i for i in range(200_000))
    assert 0.0 <= before <= process_cpu_seconds()


def test_estimated_ram_energy_hand_computed():
    sensor = EstimatedRamSensor(RAM_W_PER_GB, 16.0, clock=ticks(3.0, 13.0))
    sensor.open()
    assert sensor.read_joules() == pytest.approx(60.0)  # 0.375 W/GB x 16 GB x 10 s
    assert sensor.power_watts() == pytest.approx(6.0)
    assert sensor.source is Source.ESTIMATED_PER_GB


def test_reading_before_open_is_an_error():
    with pytest.raises(RuntimeError):
        EstimatedRamSensor(1.0, 1.0).read_joules()
    with pytest.raises(RuntimeError):
        FakeGpuSensor(100.0).read_joules()


# ---------------------------------------------------------------- fake GPU


def test_fake_gpu_constant_power():
    sensor = FakeGpuSensor(250.0, device="gpu3", clock=ticks(50.0, 54.0, 54.0))
    sensor.open()
    assert sensor.read_joules() == pytest.approx(1000.0)
    assert sensor.power_watts() == pytest.approx(250.0)
    assert (sensor.label, sensor.source) == ("gpu:gpu3", Source.FAKE)


def test_fake_gpu_power_function_integrates_exactly_for_linear_power():
    # P(t) = 100 + 50 t: integral over [0, 2] = 200 + 100 = 300 J, over [0, 3] = 300 + 225 = 525 J
    sensor = FakeGpuSensor(lambda t: 100.0 + 50.0 * t, clock=ticks(0.0, 2.0, 3.0))
    sensor.open()
    assert sensor.read_joules() == pytest.approx(300.0)
    assert sensor.read_joules() == pytest.approx(525.0)


def test_fake_gpu_rejects_negative_power():
    sensor = FakeGpuSensor(-1.0, clock=ticks(0.0, 1.0))
    sensor.open()
    with pytest.raises(ValueError):
        sensor.read_joules()


# ---------------------------------------------------------------- NVML, with pynvml patched

try:
    import pynvml
except ImportError:  # a dependency, but keep the rest of this file running without it
    pynvml = None
needs_pynvml = pytest.mark.skipif(pynvml is None, reason="nvidia-ml-py not installed")


class FakeNvml:
    """Stands in for the NVML C library behind the real pynvml bindings (real NVMLError classes)."""

    def __init__(self, monkeypatch, energy_mj=(), instant_mw=(), usage_mw=(), instant_ok=True):
        self.energy, self.instant, self.usage = list(energy_mj), list(instant_mw), list(usage_mw)
        self.instant_ok = instant_ok
        self.shutdowns = 0
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceGetPowerUsage",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        if index != 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return "handle0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.energy.pop(0)

    def nvmlDeviceGetFieldValues(self, handle, fields):
        assert fields == [pynvml.NVML_FI_DEV_POWER_INSTANT]
        if not self.instant_ok:
            return [SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=1, value=None)]
        mw = self.instant.pop(0)
        return [SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, valueType=1, value=SimpleNamespace(uiVal=mw))]

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.usage.pop(0)


@needs_pynvml
def test_nvml_counter_converts_millijoules(monkeypatch):
    nvml = FakeNvml(monkeypatch, energy_mj=[1_000_000, 1_000_000, 1_250_500, 1_300_000])
    sensor = NvmlCounterSensor(0)  # probe read
    sensor.open()
    assert sensor.read_joules() == pytest.approx(250.5)
    assert sensor.read_joules() == pytest.approx(300.0)
    sensor.close()
    sensor.close()
    assert nvml.shutdowns == 1 and sensor.source is Source.NVML_COUNTER


@needs_pynvml
def test_nvml_polling_integrates_instant_power_to_the_edge(monkeypatch):
    # probe, then samples at t=0 (100 W, open) and at the reads t=2 (200 W) and t=3 (200 W)
    FakeNvml(monkeypatch, instant_mw=[50_000, 100_000, 200_000, 200_000])
    sensor = NvmlPowerPollingSensor(0, period_s=3600.0, clock=ticks(0.0, 2.0, 3.0))  # thread stays idle
    sensor.open()
    try:
        assert sensor.read_joules() == pytest.approx(300.0)  # 2 s x (100+200)/2
        assert sensor.read_joules() == pytest.approx(500.0)  # + 1 s x 200
        assert sensor.power_watts() == pytest.approx(200.0)
    finally:
        sensor.close()


@needs_pynvml
def test_nvml_polling_falls_back_to_power_usage_with_warning(monkeypatch, caplog):
    FakeNvml(monkeypatch, usage_mw=[80_000, 100_000, 300_000], instant_ok=False)
    with caplog.at_level(logging.WARNING):
        sensor = NvmlPowerPollingSensor(0, period_s=3600.0, clock=ticks(0.0, 1.0))
    assert "1-s average" in caplog.text
    sensor.open()
    try:
        assert sensor.read_joules() == pytest.approx(200.0)
    finally:
        sensor.close()


@needs_pynvml
def test_discover_no_nvml_library_returns_no_gpu_and_warns(monkeypatch, caplog, tmp_path):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], None, None, powercap_root=tmp_path)
    assert [s for s in sensors if s.component is Component.GPU] == []
    gpu_lines = [r.getMessage() for r in caplog.records if "gpu0" in r.getMessage()]
    assert len(gpu_lines) == 1 and "NVML" in gpu_lines[0]  # one line: polling is not retried in vain


def test_discover_without_pynvml_installed(monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 1], None, None, powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvidia-ml-py" in caplog.text


@needs_pynvml
def test_discover_no_permission_skips_gpu(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[1, 2])

    def denied(index):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", denied)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], None, None, powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "permission" in caplog.text.lower()


@needs_pynvml
def test_discover_prefers_counter_then_polling(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[5])
    (gpu,) = [
        s for s in discover_sensors([0], None, None, powercap_root=tmp_path) if s.component is Component.GPU
    ]
    assert isinstance(gpu, NvmlCounterSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported (pre-Volta)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 7], None, None, powercap_root=tmp_path)  # index 7 does not exist
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [type(s) for s in gpus] == [NvmlPowerPollingSensor]
    assert "nvml_counter unavailable" in caplog.text and "gpu7" in caplog.text
    gpus[0].close()


@needs_pynvml
def test_discover_forced_gpu_sensor(monkeypatch, caplog, tmp_path):
    """monitor.gpu_sensor: `polling` is used even where the counter works; `counter` never falls back."""
    FakeNvml(monkeypatch, energy_mj=[5], instant_mw=[100_000])
    polling = (Source.NVML_POWER_POLLING,)
    sensors = discover_sensors([0], None, None, powercap_root=tmp_path, gpu_sources=polling)
    (gpu,) = [s for s in sensors if s.component is Component.GPU]
    assert isinstance(gpu, NvmlPowerPollingSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors(
            [0], None, None, powercap_root=tmp_path, gpu_sources=(Source.NVML_COUNTER,)
        )
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvml_counter unavailable" in caplog.text and "GPU energy NOT measured" in caplog.text


@needs_pynvml
def test_nvml_device_info_tolerates_unsupported_fields(monkeypatch):
    FakeNvml(monkeypatch)

    def unsupported(*_args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    me = os.getpid()
    patches = {
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlSystemGetDriverVersion": lambda: "560.35.03",
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetTemperatureV": unsupported,
        "nvmlDeviceGetTemperature": lambda h, s: 41,
        "nvmlDeviceGetClockInfo": unsupported,
        "nvmlDeviceGetPerformanceState": lambda h: 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            SimpleNamespace(pid=me),
            SimpleNamespace(pid=4242),
        ],
        "nvmlDeviceGetGraphicsRunningProcesses": unsupported,
    }
    for name, fn in patches.items():
        monkeypatch.setattr(pynvml, name, fn)
    assert nvml_device_info(0) == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "560.35.03",
        "power_limit_w": 700.0,
        "temperature_c": 41,
        "sm_clock_mhz": None,
        "pstate": "P0",
        "other_pids": [4242],
    }
    with pytest.raises(SensorUnavailable, match="no such GPU"):
        nvml_device_info(3)


# ---------------------------------------------------------------- discovery, CPU and RAM


def test_discover_without_rapl_falls_back_to_labelled_estimates(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], "Some CPU", 120.0, powercap_root=tmp_path / "absent")
    by_component = {s.component: s for s in sensors}
    assert set(by_component) == {Component.CPU, Component.RAM}
    cpu, ram = by_component[Component.CPU], by_component[Component.RAM]
    assert isinstance(cpu, EstimatedCpuSensor) and (cpu.tdp_w, cpu.idle_w) == pytest.approx((120.0, 12.0))
    assert isinstance(ram, EstimatedRamSensor) and ram.source is Source.ESTIMATED_PER_GB
    assert "CPU energy is an ESTIMATE" in caplog.text and "RAM energy is an ESTIMATE" in caplog.text


def test_discover_uses_rapl_when_readable(tmp_path):
    sensors = discover_sensors([], None, None, powercap_root=fake_powercap(tmp_path))
    assert [(s.component, s.device, s.source) for s in sensors] == [
        (Component.CPU, "package-0", Source.RAPL),
        (Component.CPU, "package-1", Source.RAPL),
        (Component.RAM, "dram-0", Source.RAPL),
    ]


def test_discover_rapl_permission_denied_falls_back(monkeypatch, caplog, tmp_path):
    real = rapl._read_text

    def deny(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", deny)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], None, None, powercap_root=fake_powercap(tmp_path))
    assert {s.source for s in sensors} == {Source.ESTIMATED_TDP, Source.ESTIMATED_PER_GB}
    assert "chmod" in caplog.text


def test_discover_fake_gpu_per_index(tmp_path):
    sensors = discover_sensors([0, 2], None, None, fake_gpu_watts=300.0, powercap_root=tmp_path)
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [(type(s), s.device, s.source) for s in gpus] == [
        (FakeGpuSensor, "gpu0", Source.FAKE),
        (FakeGpuSensor, "gpu2", Source.FAKE),
    ]


# ---------------------------------------------------------------- real NVML, on a GPU machine only


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_nvml_counter_and_polling_agree_under_steady_load():
    """Both GPU sources read the same card over one 2-s window of back-to-back matrix products."""
    counter, polling = NvmlCounterSensor(0), NvmlPowerPollingSensor(0)
    a = torch.randn(4096, 4096, device="cuda")
    for sensor in (counter, polling):
        sensor.open()
    try:
        start = time.perf_counter()
        before = (counter.read_joules(), polling.read_joules())
        while time.perf_counter() - start < 2.0:
            a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
        after = (counter.read_joules(), polling.read_joules())
    finally:
        for sensor in (counter, polling):
            sensor.close()
    by_counter, by_polling = after[0] - before[0], after[1] - before[1]
    assert by_counter > 2.0 * 20  # an active datacenter GPU draws well over 20 W
    assert by_polling == pytest.approx(by_counter, rel=0.15)
