"""The simulated GPU of tests/CI: its integral by hand."""

from __future__ import annotations

import pytest

from ecopipe.sensors.base import Source
from ecopipe.sensors.fake import FakeGpuSensor
from tests.fakes import ticks


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
