"""The CPU and RAM estimates against hand-computed values; clocks and CPU-time sources are injected."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from ecopipe.sensors.base import Source
from ecopipe.sensors.cpu_share import visible_cpus
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
from tests.fakes import EPYC_7763, busy, make_cgroup, ticks


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
