"""RAPL against a sysfs tree this machine lacks: counters, wraps, the guard thread, permissions."""

from __future__ import annotations

import logging
import time

import pytest

from ecopipe.sensors.base import Component, SensorUnavailable, Source
from ecopipe.sensors.rapl import RaplSensor, counter_delta, discover_rapl_zones
from tests.fakes import ScriptedClock, deny_energy_reads, fake_powercap, make_zone, ticks


def test_counter_delta_with_and_without_wrap():
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150  # 100 to the top, then 50 after the wrap
    assert counter_delta(7, 7, 1000) == 0
    with pytest.raises(ValueError):
        counter_delta(2000, 5, 1000)  # prev above the range: not a wrap


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
    sensor = RaplSensor(zone, guard_period_s=3600.0)  # edges only: the guard thread stays asleep
    sensor.open()
    (zone / "energy_uj").write_text("950000\n")
    assert sensor.read_joules() == pytest.approx(0.05)
    (zone / "energy_uj").write_text("100000\n")  # wrapped: +50_000 to the top, +100_000 after
    assert sensor.read_joules() == pytest.approx(0.2)
    (zone / "energy_uj").write_text("50000\n")  # wrapped again: +900_000 +50_000
    assert sensor.read_joules() == pytest.approx(1.15)
    sensor.close()


def test_rapl_power_from_counter_deltas(tmp_path):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    sensor = RaplSensor(zone, clock=ticks(9.0, 10.0, 12.0, 12.5), guard_period_s=3600.0)
    sensor.open()  # reads the clock once (9.0)
    assert sensor.power_watts() is None  # first call: no interval yet
    (zone / "energy_uj").write_text("30000000\n")  # 30 J in 2 s
    assert sensor.power_watts() == pytest.approx(15.0)
    assert sensor.read_joules() == pytest.approx(30.0)
    sensor.close()


def test_rapl_permission_denied_says_how_to_fix(tmp_path, monkeypatch):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    deny_energy_reads(monkeypatch)
    with pytest.raises(SensorUnavailable, match="chmod") as info:
        RaplSensor(zone)
    assert "sudo" in str(info.value) and "5.10" in str(info.value)


def test_rapl_refuses_overlapping_zone(tmp_path):
    with pytest.raises(ValueError, match="core"):
        RaplSensor(make_zone(tmp_path / "intel-rapl:0:0", "core", 0))


AMD_RANGE_UJ = 65_532_610_987  # max_energy_range_uj of an AMD package: ~65.5 kJ


def test_rapl_guard_reads_keep_a_long_window_whole(tmp_path):
    # A recorded two-hour trace: package power per 30-s guard period, cycling 150/220/90/280 W. The
    # window's ~1.33 MJ is ~20 counter ranges: read only at its edges, all but a fraction would be lost.
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 60_000_000_000, max_uj=AMD_RANGE_UJ)
    clock = ScriptedClock()
    sensor = RaplSensor(zone, clock=clock, guard_period_s=3600.0)  # the thread stays asleep: we poll
    assert sensor.safe_span_s == pytest.approx(65.53, rel=1e-3)  # one range at 1 kW
    sensor.open()
    counter, expected_uj = 60_000_000_000, 0
    for step in range(240):
        watts = (150, 220, 90, 280)[step % 4]
        expected_uj += watts * 30 * 1_000_000
        counter = (counter + watts * 30 * 1_000_000) % AMD_RANGE_UJ
        clock.now += 30.0
        (zone / "energy_uj").write_text(f"{counter}\n")
        sensor.poll()
    assert expected_uj > 20 * AMD_RANGE_UJ
    assert sensor.read_joules() == pytest.approx(expected_uj / 1e6, abs=1e-6)
    assert sensor.unverified_spans == 0
    sensor.close()


def test_rapl_flags_a_span_longer_than_one_range(tmp_path, caplog):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0, max_uj=AMD_RANGE_UJ)
    clock = ScriptedClock()
    sensor = RaplSensor(zone, clock=clock, guard_period_s=3600.0)
    sensor.open()
    clock.now = 100.0  # > 65.5 s: at up to 1 kW the counter could have wrapped twice unseen
    with caplog.at_level(logging.WARNING):
        sensor.read_joules()
    assert sensor.unverified_spans == 1 and "may miss whole wraps" in caplog.text
    sensor.close()


def test_rapl_guard_thread_catches_a_wrap_between_edges(tmp_path):
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    sensor = RaplSensor(zone, guard_period_s=0.005)
    sensor.open()

    def guard_sees(value: int) -> None:
        (zone / "energy_uj").write_text(f"{value}\n")
        deadline = time.monotonic() + 10
        while sensor._prev != value and time.monotonic() < deadline:  # only the guard thread reads
            time.sleep(0.005)

    try:
        guard_sees(100_000)  # wrapped once: +0.2 J
        guard_sees(950_000)  # +0.85 J
        # From the guard's last read, 950_000 -> 50_000 is one more wrap (+0.1 J): 1.15 J in all. Read
        # only at the edges, 900_000 -> 50_000 would have been 0.15 J.
        (zone / "energy_uj").write_text("50000\n")
        assert sensor.read_joules() == pytest.approx(1.15)
    finally:
        sensor.close()
    assert sensor._guard is None
