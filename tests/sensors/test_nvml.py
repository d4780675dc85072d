"""NVML's two GPU sources and device info, with NVML faked behind the real pynvml bindings; real NVML on a
GPU machine only."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace

import pytest
import torch

from ecopipe.sensors.base import SensorUnavailable, Source
from ecopipe.sensors.nvml import NvmlCounterSensor, NvmlPowerPollingSensor, nvml_device_info, trapezoid_joules
from tests.fakes import FakeNvml, needs_pynvml, pynvml, ticks


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
        assert sensor.source is Source.NVML_POWER_POLLING
    finally:
        sensor.close()


@needs_pynvml
def test_nvml_polling_falls_back_to_power_usage_with_warning(monkeypatch, caplog):
    FakeNvml(monkeypatch, usage_mw=[80_000, 100_000, 300_000], instant_ok=False)
    with caplog.at_level(logging.WARNING):
        sensor = NvmlPowerPollingSensor(0, period_s=3600.0, clock=ticks(0.0, 1.0))
    assert "1-s average" in caplog.text
    assert sensor.source is Source.NVML_AVG_POWER_POLLING and sensor.source.is_measurement
    sensor.open()
    try:
        assert sensor.read_joules() == pytest.approx(200.0)
    finally:
        sensor.close()


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
