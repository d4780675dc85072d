"""Sensor arithmetic against hand-computed values, and every fallback path without the hardware.

Clocks and CPU-time sources are injected, so nothing sleeps and no test depends on timing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from ecopipe.config import HardwareConfig
from ecopipe.hardware import MeteredGpus, device_profile, metered_gpus
from ecopipe.sensors import rapl
from ecopipe.sensors.base import Component, SensorUnavailable, Source
from ecopipe.sensors.cpu_share import visible_cpus
from ecopipe.sensors.discovery import discover_sensors
from ecopipe.sensors.estimated import (
    RAM_W_PER_GB,
    CpuShare,
    EstimatedCpuSensor,
    EstimatedRamSensor,
    cpu_power,
    process_cpu_seconds,
    process_memory_gb,
)
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.nvml import NvmlCounterSensor, NvmlPowerPollingSensor, nvml_device_info, trapezoid_joules
from ecopipe.sensors.nvml_resolve import ResolvedGpu, resolve_cuda_gpu, resolve_gpu
from ecopipe.sensors.rapl import RAPL_SET_ASIDE, RaplSensor, counter_delta, discover_rapl_zones
from tests.conftest import fake_powercap, make_zone, powercap_with_dram


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


AMD_RANGE_UJ = 65_532_610_987  # max_energy_range_uj of an AMD package: ~65.5 kJ


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rapl_guard_reads_keep_a_long_window_whole(tmp_path):
    # A recorded two-hour trace: package power per 30-s guard period, cycling 150/220/90/280 W. The
    # window's ~1.33 MJ is ~20 counter ranges: read only at its edges, all but a fraction would be lost.
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 60_000_000_000, max_uj=AMD_RANGE_UJ)
    clock = StepClock()
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
    clock = StepClock()
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


# ---------------------------------------------------------------- estimates

EPYC_7763 = "AMD EPYC 7763 64-Core Processor"  # 280 W, 64 cores / 128 threads per package


def busy(*cpu_seconds: float):
    """A CPU-seconds source returning the given totals in order, whatever is excluded."""
    it = iter(cpu_seconds)
    return lambda _exclude: next(it)


def share_of(model: str, threads: float, note: str = "given") -> CpuShare:
    """The estimate's share for a CPU named `model` (identified by its name alone)."""
    return CpuShare(cpu_power(model), threads, note)


def test_vm_share_of_a_known_microarchitecture():
    # A 2-vCPU VM whose model string says EPYC 7763: Zen 3 (EPYC 3rd Gen), SPECpower per thread at
    # full load 1.585938 / 1.957334 / 2.328125 W (ecopipe/data/cpu_power_specpower.csv).
    share = share_of(EPYC_7763, 2)
    assert share.power.identity.microarch == "zen3" and share.power.identity.how == "name"
    sensor = EstimatedCpuSensor(share, clock=ticks(0.0, 10.0), cpu_seconds=busy(0.0, 20.0))
    sensor.open()
    # Both threads busy for 10 s: full-load watts x 2 threads x 10 s, at each bound.
    assert sensor.read_band_at(10.0) == pytest.approx((31.71876, 39.14668, 46.5625))
    assert "EPYC 3rd Gen" in sensor.method and "x 2 threads" in sensor.method
    # The hardware table's TDP per thread (280 W / 128) is set beside the band, a cross-check.
    assert "280 W / 128 threads = 2.19 W per thread" in sensor.method


def test_two_socket_host_counts_every_thread():
    # 2 x Xeon 8380 (Ice Lake), all 160 threads visible; idle per thread 0.63125 / 0.766797 / 0.89375 W.
    share = share_of("Intel Xeon Platinum 8380", 160)
    sensor = EstimatedCpuSensor(share, clock=ticks(0.0, 1.0, 3.0), cpu_seconds=busy(0.0, 0.0, 80.0))
    sensor.open()
    assert sensor.read_band_at(1.0) == pytest.approx((101.0, 122.68752, 143.0))  # idle: 160 x idle x 1 s
    # Then 80 CPU-s in 2 s on 160 threads, utilisation 0.25: point per thread 0.766797 + 0.25 x
    # (3.758203 - 0.766797) = 1.51464850 W, x 160 x 2 s = 484.68752 J more.
    assert sensor.read_joules_at(3.0) == pytest.approx(122.68752 + 484.68752)


def test_cpu_seconds_dipping_never_lowers_the_energy():
    share = share_of(EPYC_7763, 4)
    sensor = EstimatedCpuSensor(share, clock=ticks(0.0, 1.0, 2.0), cpu_seconds=busy(0.0, 2.0, 1.5))
    sensor.open()
    idle, full = share.power.coefficients.idle_w[1], share.power.coefficients.full_w[1]
    half = 4 * (idle + 0.5 * (full - idle))  # utilisation 0.5 for 1 s
    assert sensor.read_joules() == pytest.approx(half)
    # A child exiting unreaped dips the CPU seconds: counted as idle, not negative.
    assert sensor.read_joules() == pytest.approx(half + 4 * idle)


def test_unknown_microarchitecture_gets_the_vendors_wide_band():
    unknown = cpu_power("Intel(R) Xeon(R) Processor")  # the CI VM's generic name, no ids to go on
    known = cpu_power("Intel Xeon Platinum 8380")
    assert unknown.identity.microarch is None and not unknown.coefficients.known
    assert "Intel server range" in unknown.note
    for end in ("idle_w", "full_w"):
        wide, narrow = getattr(unknown.coefficients, end), getattr(known.coefficients, end)
        assert wide[0] < narrow[0] and wide[2] > narrow[2]


def make_cgroup(root: Path, group: str, name: str, text: str) -> None:
    folder = root / group.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text + "\n")


def test_cgroup_v2_quota_caps_visible_cpus(tmp_path):
    make_cgroup(tmp_path, "/", "cpu.max", "max 100000")
    make_cgroup(tmp_path, "/job.slice", "cpu.max", "150000 100000")
    visible = visible_cpus(affinity=8, proc_cgroup="0::/job.slice\n", root=tmp_path)
    assert visible.count == pytest.approx(1.5) and "quota" in visible.note
    # A parent's cap applies to its children: /a caps at 1 CPU, /a/b has no cap of its own.
    make_cgroup(tmp_path, "/a", "cpu.max", "100000 100000")
    make_cgroup(tmp_path, "/a/b", "cpu.max", "max 100000")
    assert visible_cpus(affinity=8, proc_cgroup="0::/a/b", root=tmp_path).count == pytest.approx(1.0)
    # A quota above the affinity mask changes nothing.
    assert visible_cpus(affinity=1, proc_cgroup="0::/job.slice", root=tmp_path).count == 1.0


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    make_cgroup(tmp_path, "/cpu,cpuacct/docker/abc", "cpu.cfs_quota_us", "200000")
    make_cgroup(tmp_path, "/cpu,cpuacct/docker/abc", "cpu.cfs_period_us", "100000")
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert visible_cpus(affinity=64, proc_cgroup=text, root=tmp_path).count == pytest.approx(2.0)
    make_cgroup(tmp_path, "/cpu/x", "cpu.cfs_quota_us", "-1")  # -1: no quota
    make_cgroup(tmp_path, "/cpu/x", "cpu.cfs_period_us", "100000")
    visible = visible_cpus(affinity=64, proc_cgroup="3:cpu:/x", root=tmp_path)
    assert visible.count == 64 and "affinity" in visible.note


def test_cgroup_quota_share_of_an_epyc(tmp_path):
    # A container capped at 1.5 CPUs on an EPYC 7763 host: 1.5 threads' share, not the host's 128.
    make_cgroup(tmp_path, "/pod", "cpu.max", "150000 100000")
    visible = visible_cpus(affinity=128, proc_cgroup="0::/pod", root=tmp_path)
    share = share_of(EPYC_7763, visible.count, visible.note)
    sensor = EstimatedCpuSensor(share, clock=ticks(0.0, 1.0), cpu_seconds=busy(0.0, 0.75))
    sensor.open()
    # 0.75 CPU-s in 1 s on 1.5 CPUs: utilisation 0.5, per thread 0.455625 + 0.5 x (1.957334 -
    # 0.455625) = 1.2064795 W, x 1.5 threads x 1 s.
    assert sensor.read_joules() == pytest.approx(1.80971925)
    assert "cgroup CPU quota 1.5" in sensor.method


BUSY_CHILD = """
import sys, time
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
print("busy", flush=True)
time.sleep(30)
"""


def test_process_tree_reads_count_children_but_the_excluded():
    # A child that burns 0.3 CPU-s, then waits: its CPU time and memory are the job's (a DataLoader
    # worker is), unless excluded (the sampler); once reaped, its CPU time stays in the job's total.
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "busy"
        times = psutil.Process(child.pid).cpu_times()
        child_cpu_s = times.user + times.system
        rss = psutil.Process(child.pid).memory_info().rss / 2**30
        with_child, without = process_cpu_seconds(), process_cpu_seconds(exclude={child.pid})
        assert child_cpu_s >= 0.3
        assert with_child - without == pytest.approx(child_cpu_s, abs=0.05)
        assert process_memory_gb() - process_memory_gb(exclude={child.pid}) == pytest.approx(rss, rel=0.2)
    finally:
        child.kill()
        child.wait()
    reaped = process_cpu_seconds(exclude={child.pid})  # now in this process's children_* times
    assert reaped - without == pytest.approx(child_cpu_s, abs=0.05)


def test_ram_held_by_job_hand_computed():
    seen: list[set[int]] = []

    def gigabytes(exclude):
        seen.append(set(exclude))
        return [2.0, 4.0, 4.0][len(seen) - 1]

    sensor = EstimatedRamSensor.held_by_job(clock=ticks(0.0, 10.0, 12.0), gigabytes=gigabytes)
    sensor.exclude_process(4242)
    sensor.open()
    assert sensor.read_joules() == pytest.approx(11.25)  # 0.375 W/GB x (2 + 4) / 2 GB x 10 s
    assert sensor.read_joules() == pytest.approx(11.25 + 3.0)  # + 0.375 x 4 GB x 2 s
    assert seen[-1] == {4242}  # the sampler's pid never counts
    assert sensor.source is Source.ESTIMATED_RSS and "resident memory" in sensor.method


def test_ram_installed_hand_computed():
    sensor = EstimatedRamSensor.installed(16.0, clock=ticks(3.0, 13.0))
    sensor.open()
    assert sensor.read_joules() == pytest.approx(60.0)  # 0.375 W/GB x 16 GB x 10 s
    assert sensor.source is Source.ESTIMATED_PER_GB and RAM_W_PER_GB == (0.02, 0.375, 0.375)


def test_reading_before_open_is_an_error():
    with pytest.raises(RuntimeError):
        EstimatedRamSensor.installed(1.0).read_joules()
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
def test_discover_no_nvml_library_returns_no_gpu_and_warns(monkeypatch, caplog, tmp_path):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path)
    assert [s for s in sensors if s.component is Component.GPU] == []
    gpu_lines = [r.getMessage() for r in caplog.records if "gpu0" in r.getMessage()]
    assert len(gpu_lines) == 1 and "NVML" in gpu_lines[0]  # one line: polling is not retried in vain


def test_discover_without_pynvml_installed(monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 1], powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvidia-ml-py" in caplog.text


@needs_pynvml
def test_discover_no_permission_skips_gpu(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[1, 2])

    def denied(index):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", denied)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "permission" in caplog.text.lower()


@needs_pynvml
def test_discover_prefers_counter_then_polling(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[5])
    (gpu,) = [s for s in discover_sensors([0], powercap_root=tmp_path) if s.component is Component.GPU]
    assert isinstance(gpu, NvmlCounterSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported (pre-Volta)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 7], powercap_root=tmp_path)  # index 7 does not exist
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [type(s) for s in gpus] == [NvmlPowerPollingSensor]
    assert "nvml_counter unavailable" in caplog.text and "gpu7" in caplog.text
    gpus[0].close()


@needs_pynvml
def test_discover_forced_gpu_sensor(monkeypatch, caplog, tmp_path):
    """monitor.gpu_sensor: `polling` is used even where the counter works; `counter` never falls back."""
    FakeNvml(monkeypatch, energy_mj=[5], instant_mw=[100_000])
    polling = (Source.NVML_POWER_POLLING,)
    sensors = discover_sensors([0], powercap_root=tmp_path, gpu_sources=polling)
    (gpu,) = [s for s in sensors if s.component is Component.GPU]
    assert isinstance(gpu, NvmlPowerPollingSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path, gpu_sources=(Source.NVML_COUNTER,))
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvml_counter unavailable" in caplog.text and "GPU energy NOT measured" in caplog.text


class FakeNvmlGpus(FakeNvml):
    """NVML's view of GPUs and MIG instances this machine lacks, found by UUID (real NVMLError classes).

    `gpus`: UUID -> NVML index; `instances`: MIG instance UUID -> its GPU's NVML index; `mig_mode`: NVML
    index -> current MIG mode (a GPU missing from it is not MIG-capable: NVML answers NotSupported).
    """

    def __init__(self, monkeypatch, gpus, instances=None, mig_mode=None, slices=None, **counters):
        super().__init__(monkeypatch, **counters)
        self.gpus, self.instances, self.mig_mode = gpus, instances or {}, mig_mode or {}
        self.slices = slices or {}  # MIG instance UUID -> its GPU slices (of 7); missing: NotSupported
        self.looked_up: list[str] = []
        for name in (
            "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetIndex",
            "nvmlDeviceIsMigDeviceHandle",
            "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
            "nvmlDeviceGetMigMode",
            "nvmlDeviceGetAttributes",
            "nvmlDeviceGetMaxMigDeviceCount",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def nvmlDeviceGetAttributes(self, handle):
        if handle[0] != "mig" or handle[1] not in self.slices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpuInstanceSliceCount=self.slices[handle[1]])

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7  # A100 and H100: seven 1g instances at most

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes):
        self.looked_up.append(uuid.decode())
        if uuid.decode() in self.instances:
            return ("mig", uuid.decode())
        if uuid.decode() not in self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return ("gpu", self.gpus[uuid.decode()])

    def nvmlDeviceGetIndex(self, handle):
        kind, index = handle
        assert kind == "gpu", "a MIG handle has no NVML index of a GPU"
        return index

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return ctypes.c_uint(handle[0] == "mig")  # as the real binding returns it: a c_uint, not an int

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("gpu", self.instances[handle[1]])

    def nvmlDeviceGetMigMode(self, handle):
        if handle[1] not in self.mig_mode:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [self.mig_mode[handle[1]], self.mig_mode[handle[1]]]


def torch_uuids(monkeypatch, uuids: dict[int, str]) -> None:
    """torch's view of CUDA devices this machine lacks: the UUID it prints for each CUDA index."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))


@needs_pynvml
def test_cuda_device_maps_to_its_nvml_index_by_uuid(monkeypatch, caplog):
    """Under SLURM, CUDA_VISIBLE_DEVICES=2,0 makes cuda:0 the card NVML calls 2: the UUID decides.

    NVML's and torch's views of GPUs this machine lacks are faked (the rule's GPU exception); the mapping
    and the job's choice of what to meter run for real.
    """
    nvml = FakeNvmlGpus(monkeypatch, {"GPU-aaaa": 2, "GPU-bbbb": 0})
    # torch reports the UUID without NVML's "GPU-" prefix; the job's device string names CUDA's index.
    torch_uuids(monkeypatch, {0: "aaaa", 1: "bbbb", 3: "cccc"})
    assert metered_gpus("cuda", None) == metered_gpus("cuda:0", None) == MeteredGpus((2,))
    assert metered_gpus("cuda:1", None) == MeteredGpus((0,))
    assert metered_gpus("cuda:1", 75.0) == MeteredGpus((0,))  # a simulated GPU's watts, on the job's own card
    assert metered_gpus("cpu", None) == MeteredGpus(())
    assert metered_gpus("cpu", 75.0) == MeteredGpus((0,))  # CI: a simulated GPU for a job on the CPU
    assert resolve_gpu(0, "GPU-aaaa") == ResolvedGpu(0, "GPU-aaaa", 2, False)  # not prefixed twice
    assert nvml.shutdowns == 5  # NVML is released after each look-up
    # NVML does not know cuda:3's UUID: no guess at CUDA's index 3 (another card, or none), a warning.
    with caplog.at_level(logging.WARNING):
        unknown = metered_gpus("cuda:3", None)
    assert unknown.indices == () and "NVML knows no GPU or MIG instance with UUID cccc" in unknown.unmetered
    assert f"GPU energy NOT measured: {unknown.unmetered}" in caplog.text
    assert nvml.looked_up[-2:] == ["GPU-cccc", "MIG-cccc"]  # both of NVML's names were tried


@needs_pynvml
def test_a_mig_instance_is_metered_as_the_whole_gpu_and_labelled_so(monkeypatch, tmp_path):
    """CUDA's device is a MIG instance (torch prints its UUID bare): NVML's counter is the whole GPU's,
    so the job reads it under nvml_counter_whole_gpu, with the instance's share, never as its own."""
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.report import MIG_SHARE_TAG, WHOLE_GPU_TAG, meter_tags, mig_tags

    FakeNvmlGpus(
        monkeypatch,
        {"GPU-eeee": 0},
        instances={"MIG-dddd": 0},
        mig_mode={0: 1},
        slices={"MIG-dddd": 3},
        energy_mj=[1_000, 5_000],
    )
    torch_uuids(monkeypatch, {0: "dddd"})
    gpu = resolve_cuda_gpu(0)
    assert (gpu.uuid, gpu.index, gpu.mig, gpu.whole_gpu) == ("MIG-dddd", 0, True, True)
    assert gpu.share == pytest.approx(3 / 7)
    assert gpu.reason == (
        "cuda:0 is MIG instance MIG-dddd of NVML GPU 0, holding 43% of it: NVML's counter covers the whole "
        "GPU, every instance's work included"
    )
    assert resolve_gpu(0, "MIG-dddd") == gpu  # the same instance, named with its prefix
    plan = metered_gpus("cuda:0", None)
    assert plan == MeteredGpus((0,), whole_gpu=gpu.reason, mig_share=pytest.approx(3 / 7))
    sensors = discover_sensors(
        plan.indices, powercap_root=tmp_path, gpu_sources=(Source.NVML_COUNTER,), whole_gpu=plan.whole_gpu
    )
    meter = EnergyMeter(sensors)
    tags = meter_tags(meter, "cuda:0") | mig_tags(plan.mig_share, meter)
    assert tags["energy_source.gpu"] == "nvml_counter_whole_gpu" and tags[f"{WHOLE_GPU_TAG}gpu"] == gpu.reason
    assert tags[MIG_SHARE_TAG] == "0.4286"
    for sensor in sensors:
        sensor.close()


@needs_pynvml
def test_a_mig_share_nvml_cannot_tell_is_unknown(monkeypatch):
    FakeNvmlGpus(monkeypatch, {"GPU-eeee": 0}, instances={"MIG-dddd": 0}, mig_mode={0: 1})
    gpu = resolve_gpu(0, "dddd")
    assert gpu.whole_gpu and gpu.share is None and "holding an unknown share of it" in gpu.reason


@needs_pynvml
def test_a_gpu_in_mig_mode_is_metered_as_the_whole_gpu(monkeypatch):
    """A driver naming the whole GPU to CUDA while it is in MIG mode: the counter covers every instance."""
    nvml = FakeNvmlGpus(monkeypatch, {"GPU-eeee": 1}, mig_mode={1: pynvml.NVML_DEVICE_MIG_ENABLE})
    torch_uuids(monkeypatch, {0: "eeee"})
    gpu = resolve_cuda_gpu(0)
    assert (gpu.uuid, gpu.index, gpu.mig, gpu.whole_gpu, gpu.share) == ("GPU-eeee", 1, True, True, None)
    assert gpu.reason == "cuda:0 is NVML GPU 1 (GPU-eeee) in MIG mode: its counter covers every MIG instance"
    assert metered_gpus("cuda:0", None) == MeteredGpus((1,), whole_gpu=gpu.reason)
    nvml.mig_mode[1] = pynvml.NVML_DEVICE_MIG_DISABLE  # MIG-capable, MIG off: the job's own GPU
    assert resolve_cuda_gpu(0) == ResolvedGpu(0, "GPU-eeee", 1, False)


@needs_pynvml
def test_an_unusable_nvml_leaves_the_gpu_unmetered_and_says_why(monkeypatch):
    FakeNvmlGpus(monkeypatch, {"GPU-aaaa": 0})

    def refuse(code):
        def call(*_args):
            raise pynvml.NVMLError(code)

        return call

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", refuse(pynvml.NVML_ERROR_NO_PERMISSION))
    gpu = resolve_gpu(0, "aaaa")
    assert gpu.index is None and gpu.reason.startswith("cuda:0: NVML cannot resolve UUID aaaa (")
    monkeypatch.setattr(pynvml, "nvmlInit", refuse(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    gpu = resolve_gpu(0, "aaaa")
    assert gpu.index is None and gpu.reason.startswith("cuda:0: NVML not usable (")


def test_the_gpu_resolver_needs_nothing_but_pynvml():
    """The GPU check resolves cuda:N in a process of its own: ecopipe's other dependencies are barred.

    Run here for real, without an NVIDIA driver: the GPU is left unmetered, and the reason says why.
    """
    barred = ("psutil", "omegaconf", "hydra", "mlflow", "pandas", "numpy", "scipy", "sklearn", "torch")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({barred!r}))\n"
        "from ecopipe.sensors.nvml_resolve import resolve_cuda_gpu, resolve_gpu\n"
        "print(resolve_gpu(0, 'aaaa').reason)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("cuda:0: NVML ")


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
        sensors = discover_sensors(
            [], cpu_power("Intel Xeon Platinum 8380"), powercap_root=tmp_path / "absent", job_cpus=2
        )
    by_component = {s.component: s for s in sensors}
    assert set(by_component) == {Component.CPU, Component.RAM}
    cpu, ram = by_component[Component.CPU], by_component[Component.RAM]
    assert isinstance(cpu, EstimatedCpuSensor) and cpu.share.threads == 2
    assert cpu.share.power.identity.microarch == "ice_lake"
    assert isinstance(ram, EstimatedRamSensor) and ram.source is Source.ESTIMATED_RSS
    # The memory Ice Lake's SPECpower servers hold per thread (1.6 GB) is in the cpu figure already.
    assert ram.allowance_gb == pytest.approx(2 * 1.6)
    assert "CPU energy is an ESTIMATE" in caplog.text and "RAM energy is an ESTIMATE" in caplog.text
    machine = discover_sensors([], powercap_root=tmp_path, ram_estimate="machine")
    assert [s.source for s in machine if s.component is Component.RAM] == [Source.ESTIMATED_PER_GB]
    with pytest.raises(ValueError, match="job, machine"):
        discover_sensors([], powercap_root=tmp_path, ram_estimate="installed")


def test_discover_uses_rapl_dram_only_where_every_package_has_one(caplog, tmp_path):
    root = fake_powercap(tmp_path / "one")  # dram on package 0 of 2
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=root)
    assert [(s.component, s.device, s.source) for s in sensors] == [
        (Component.CPU, "package-0", Source.RAPL),
        (Component.CPU, "package-1", Source.RAPL),
        (Component.RAM, "ram", Source.ESTIMATED_RSS),
    ]
    assert "dram zone on 1 of 2 packages" in caplog.text
    make_zone(root / "intel-rapl:1" / "intel-rapl:1:1", "dram", 70)
    sensors = discover_sensors([], powercap_root=root)
    assert [(s.device, s.source) for s in sensors if s.component is Component.RAM] == [
        ("dram-0", Source.RAPL),
        ("dram-1", Source.RAPL),
    ]
    for sensor in sensors:
        sensor.close()


def test_discover_sets_readable_rapl_aside_on_request(caplog, tmp_path):
    """monitor.rapl=false: an estimate beside the RAPL counter on one host, and the log says why."""
    root = powercap_with_dram(tmp_path)
    with caplog.at_level(logging.WARNING):
        metered = discover_sensors([], powercap_root=root)
    assert {(s.component, s.source) for s in metered} == {
        (Component.CPU, Source.RAPL),
        (Component.RAM, Source.RAPL),
    }
    assert "ESTIMATE" not in caplog.text
    for sensor in metered:
        sensor.close()
    with caplog.at_level(logging.WARNING):
        estimated = discover_sensors([], powercap_root=root, rapl=False)
    assert [s.source for s in estimated] == [Source.ESTIMATED_SPECPOWER, Source.ESTIMATED_RSS]
    assert f"CPU energy is an ESTIMATE (estimated_specpower), {RAPL_SET_ASIDE}: " in caplog.text
    assert f"RAM energy is an ESTIMATE (estimated_rss), {RAPL_SET_ASIDE}: " in caplog.text
    assert RAPL_SET_ASIDE == "RAPL set aside on request (monitor.rapl=false)"
    assert "no readable RAPL" not in caplog.text and "no RAPL dram zone" not in caplog.text


def test_rapl_is_said_to_be_set_aside_only_where_it_was_readable(caplog, tmp_path):
    """monitor.rapl=false on a host without RAPL, or with dram on one package only, sets aside no more
    than was there: the meter's set_aside (the tags) and the log say what really happened."""
    from ecopipe.monitor.energy import EnergyMeter

    with caplog.at_level(logging.WARNING):
        nothing = discover_sensors([], powercap_root=tmp_path / "absent", rapl=False)
    assert EnergyMeter(nothing).set_aside == {} and RAPL_SET_ASIDE not in caplog.text
    assert "no readable RAPL package" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # dram on package 0 only: RAM was never measurable here
        packages_only = discover_sensors([], powercap_root=fake_powercap(tmp_path / "p"), rapl=False)
    assert EnergyMeter(packages_only).set_aside == {"cpu": "rapl"}
    assert f"CPU energy is an ESTIMATE (estimated_specpower), {RAPL_SET_ASIDE}" in caplog.text
    assert "RAM energy is an ESTIMATE (estimated_rss), no RAPL dram zone" in caplog.text
    both = discover_sensors([], powercap_root=powercap_with_dram(tmp_path / "d"), rapl=False)
    assert EnergyMeter(both).set_aside == {"cpu": "rapl", "ram": "rapl"}


def test_discover_rapl_permission_denied_falls_back(monkeypatch, caplog, tmp_path):
    real = rapl._read_text

    def deny(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", deny)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=fake_powercap(tmp_path))
    assert {s.source for s in sensors} == {Source.ESTIMATED_SPECPOWER, Source.ESTIMATED_RSS}
    assert "chmod" in caplog.text


def test_discover_fake_gpu_per_index(tmp_path):
    sensors = discover_sensors([0, 2], fake_gpu_watts=300.0, powercap_root=tmp_path)
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


# ---------------------------------------------------------------- hardware profile of a GPU


@pytest.mark.parametrize(
    ("cuda_name", "key", "tier", "tdp", "bandwidth"),
    [
        ("NVIDIA A10G", "a10g", "datacenter", 300.0, 600.0),
        ("NVIDIA A40", "a40", "datacenter", 300.0, 696.0),
        ("NVIDIA L40S", "l40s", "datacenter", 350.0, 864.0),
        ("NVIDIA H800", "h800", "datacenter", 700.0, 3350.0),
        ("NVIDIA GH200 480GB", "gh200", "datacenter", 1000.0, 4000.0),
        ("NVIDIA RTX A6000", "rtx_a6000", "desktop", 300.0, 768.0),
    ],
)
def test_gpus_from_review_have_rows(monkeypatch, cuda_name, key, tier, tdp, bandwidth):
    from ecopipe import hardware
    from ecopipe.reference import hardware_profiles

    monkeypatch.setattr(hardware, "gpu_model_name", lambda index: cuda_name)  # no GPU on this machine
    profile = device_profile(HardwareConfig(), "cuda:0")
    assert (profile.key, profile.tier, profile.tdp_w) == (key, tier, tdp)
    assert hardware_profiles()[key].memory_bandwidth_gb_s == bandwidth


def test_unknown_cuda_device_defaults_to_datacenter(monkeypatch, caplog):
    from ecopipe import hardware

    monkeypatch.setattr(hardware, "gpu_model_name", lambda index: "NVIDIA B300 SXM6 AC")
    with caplog.at_level(logging.WARNING):
        profile = device_profile(HardwareConfig(), "cuda:0")
    assert (profile.key, profile.tier, profile.tier_assumed) == ("unknown", "datacenter", True)
    assert "CUDA device 'NVIDIA B300 SXM6 AC' is not in the hardware table" in caplog.text
    # A tier the user set is theirs, not an assumption: the summary then says nothing about it.
    chosen = device_profile(HardwareConfig(tier="desktop"), "cuda:0")
    assert (chosen.tier, chosen.tier_assumed) == (
        "desktop",
        False,
    ) and "set by hardware.tier" in chosen.source


def test_cpu_model_override_picks_the_profile():
    profile = device_profile(HardwareConfig(cpu_model=EPYC_7763), "cpu")
    assert (profile.key, profile.tdp_w, profile.detected_name) == ("epyc_7763", 280.0, EPYC_7763)


def test_machine_meter_takes_the_ram_estimate_asked_for():
    from ecopipe.monitor.energy import machine_meter

    for asked, source in (("machine", Source.ESTIMATED_PER_GB), ("job", Source.ESTIMATED_RSS)):
        (ram,) = [s for s in machine_meter([], ram_estimate=asked).sensors if s.component is Component.RAM]
        if ram.source is Source.RAPL:
            pytest.skip("this machine has a RAPL dram zone: no estimate to choose")
        assert ram.source is source


def test_machine_meter_takes_the_cpu_power_given():
    from ecopipe.monitor.energy import machine_meter

    given = cpu_power(EPYC_7763)
    (cpu,) = [s for s in machine_meter([], cpu_power=given).sensors if s.component is Component.CPU]
    if not isinstance(cpu, EstimatedCpuSensor):
        pytest.skip("this machine has readable RAPL: no estimate to check")
    assert cpu.share.power is given and cpu.method.startswith("Zen 3 (EPYC)")


def test_unreadable_dram_keeps_the_package_measured_and_says_why(monkeypatch, caplog, tmp_path):
    """A dram file that cannot be read leaves RAM estimated, with the reason in the tags and the
    summary's label; the readable packages stay measured (before: the whole of RAPL was thrown away)."""
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.report import FALLBACK_TAG, meter_tags

    root = powercap_with_dram(tmp_path)
    real = rapl._read_text

    def deny_dram(path: Path) -> str:
        if (
            path.name == "energy_uj"
            and path.parent.name.count(":") == 2
            and real(path.parent / "name") == "dram"
        ):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", deny_dram)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=root)
    assert [(s.component, s.source) for s in sensors] == [
        (Component.CPU, Source.RAPL),
        (Component.CPU, Source.RAPL),
        (Component.RAM, Source.ESTIMATED_RSS),
    ]
    assert "the package stays measured" in caplog.text
    ram = sensors[-1]
    assert ram.fallback.startswith("RAPL dram unreadable: ") and "chmod" in ram.fallback
    meter = EnergyMeter(sensors)
    tags = meter_tags(meter, "cpu")
    assert tags[f"{FALLBACK_TAG}ram"] == ram.fallback and f"{FALLBACK_TAG}cpu" not in tags
    assert tags["energy_measured.cpu"] == "true" and tags["energy_measured.ram"] == "false"
    for sensor in sensors:
        sensor.close()
