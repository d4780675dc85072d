"""The meter's arithmetic: windows of snapshots, one timestamp per snapshot, and a whole-machine counter
charged at the job's share of busy CPU time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ecopipe.monitor.busy import CpuTimes, machine_busy_s
from ecopipe.monitor.energy import Energy, EnergyMeter, Power, Snapshot, Window
from ecopipe.sensors.estimated import CpuShare, EstimatedCpuSensor, EstimatedRamSensor, cpu_power
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.rapl import RaplSensor
from tests.fakes import EPYC_7763, ScriptedClock, make_zone


def test_energy_arithmetic():
    a, b = Energy(gpu=10, cpu=4, ram=1), Energy(gpu=2, cpu=1, ram=0.5)
    assert (a - b) == Energy(8, 3, 0.5)
    assert (a + b).total == 18.5
    assert (a / 2) == Energy(5, 2, 0.5)
    assert (a * 3).total == 45
    assert Window(Energy(gpu=30), 3.0).power == Power(gpu=10)


def test_meter_window_is_power_times_time():
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(250.0, clock=clock)], clock=clock)
    meter.open()
    start = meter.snapshot()
    clock.now = 2.0
    window = meter.since(start)
    assert window.duration_s == 2.0
    assert window.energy.gpu == pytest.approx(500.0)
    assert meter.sources == {"gpu": "fake", "cpu": "none", "ram": "none"}
    assert meter.measured == {"gpu": False, "cpu": False, "ram": False}


def test_one_timestamp_per_snapshot_for_models():
    # Every clock read costs 1 ms and the CPU estimate's psutil read 20 ms: with a clock of its own per
    # sensor, a constant-power model's window would not be its power x the window's duration.
    clock = ScriptedClock(read_cost_s=0.001)

    def slow_cpu_seconds(_exclude) -> float:
        clock.now += 0.020
        return 0.0

    share = CpuShare(cpu_power(EPYC_7763), 2, "given")  # Zen 3: idle 0.455625 W per thread
    sensors = [
        FakeGpuSensor(250.0, clock=clock),
        EstimatedCpuSensor(share, clock=clock, cpu_seconds=slow_cpu_seconds),
        EstimatedRamSensor.installed(8.0, clock=clock),  # 3 W
    ]
    meter = EnergyMeter(sensors, clock=clock)
    meter.open()
    start = meter.snapshot()
    clock.now += 2.0
    window = meter.since(start)
    assert window.energy.gpu == pytest.approx(250.0 * window.duration_s, rel=1e-12)
    assert window.energy.cpu == pytest.approx(2 * 0.455625 * window.duration_s, rel=1e-6)
    assert window.energy.ram == pytest.approx(3.0 * window.duration_s, rel=1e-12)
    assert meter.methods.keys() == {"cpu", "ram"} and "SPECpower" in meter.methods["cpu"]


def test_a_window_is_two_snapshots_apart_per_component_with_their_wall_clock_edges():
    meter = EnergyMeter([FakeGpuSensor(1.0, "gpu0"), FakeGpuSensor(1.0, "gpu1")])
    start, end = Snapshot(1.0, 100.0, (2.0, 3.0)), Snapshot(1.5, 100.5, (5.0, 7.0))
    # Both GPUs add up under gpu; the edges are the snapshots' wall clock (logged as trial_*_unix_s).
    assert meter.between(start, end) == Window(Energy(gpu=7.0), 0.5, 100.0, 100.5)
    with pytest.raises(ValueError):  # a snapshot of another meter (another sensor count) is refused
        meter.between(start, Snapshot(1.5, 100.5, (5.0, 7.0, 1.0)))
    # A live snapshot reads the wall clock too: another process's trace is lined up on it.
    meter.open()
    before = time.time()
    live = meter.since(meter.snapshot())
    assert before <= live.start_unix_s <= live.end_unix_s <= time.time()


PROC_STAT = Path(__file__).parents[1] / "data" / "proc_stat"


def test_proc_stat_busy_time_by_hand():
    text = (PROC_STAT / "busy_end").read_text()
    # user + nice + system + irq + softirq + steal: 8544 + 7 + 2836 + 0 + 52 + 4 ticks at 100 Hz
    assert machine_busy_s(text, ticks_per_s=100) == pytest.approx(114.43)
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        machine_busy_s("cpu0 1 2 3 4\n")


class RecordedMachine:
    """A RAPL package (a fake powercap zone) and /proc/stat as recorded, moved on by the test."""

    def __init__(self, folder: Path, stat: str) -> None:
        self.zone = make_zone(folder / "intel-rapl:0", "package-0", 1_000_000)
        self.stat = folder / "stat"
        self.stat.write_text((PROC_STAT / f"{stat}_start").read_text())
        self.job_s = 10.0
        self.clock = ScriptedClock()

    def meter(self, share: bool = True) -> EnergyMeter:
        cpu_times = CpuTimes(self.stat, job_seconds=lambda: self.job_s) if share else None
        meter = EnergyMeter([RaplSensor(self.zone, clock=self.clock)], clock=self.clock, cpu_times=cpu_times)
        meter.open()
        return meter

    def run(self, stat_end: str, joules: float, job_s: float, seconds: float) -> None:
        """`seconds` pass in which the package counts `joules` and the job uses `job_s` of CPU."""
        energy = int((self.zone / "energy_uj").read_text())
        (self.zone / "energy_uj").write_text(f"{energy + int(joules * 1e6)}\n")
        self.stat.write_text((PROC_STAT / stat_end).read_text())
        self.job_s += job_s
        self.clock.now += seconds


@pytest.mark.parametrize(
    ("machine", "busy_ticks"),
    [("busy", 390), ("idle", 194)],  # the files' busy ticks over the 2 s: see tests/data/proc_stat
)
def test_rapl_charges_the_jobs_share_of_busy_cpu_time(tmp_path, machine, busy_ticks):
    recorded = RecordedMachine(tmp_path, machine)
    meter = recorded.meter()
    start = meter.snapshot()
    recorded.run(f"{machine}_end", joules=60.0, job_s=1.9, seconds=2.0)
    window = meter.since(start)
    share = 1.9 / (busy_ticks / 100)
    assert window.job_share == pytest.approx(share)
    assert window.energy.cpu == pytest.approx(60.0 * share) and window.machine.cpu == pytest.approx(60.0)
    assert window.shared == ("cpu",) and meter.sources["cpu"] == "rapl_job_share"
    # A 10-W idle baseline is charged at the window's share too: net = share x (machine - idle).
    assert window.baseline(Power(cpu=10.0)).cpu == pytest.approx(share * 20.0)
    if machine == "idle":  # nothing else ran: the job's figure and the machine's agree within 3%
        assert window.energy.cpu == pytest.approx(window.machine.cpu, rel=0.03)
    else:  # another process kept a CPU busy: the job is charged about half
        assert 0.45 < window.energy.cpu / window.machine.cpu < 0.5
    meter.close()


def test_rapl_whole_machine_on_request_and_baseline_unshared(tmp_path):
    recorded = RecordedMachine(tmp_path, "busy")
    whole = recorded.meter(share=False)  # monitor.rapl_attribution=whole_machine
    start = whole.snapshot()
    recorded.run("busy_end", joules=60.0, job_s=1.9, seconds=2.0)
    window = whole.since(start)
    assert window.energy.cpu == pytest.approx(60.0) and window.job_share is None and window.machine is None
    assert whole.sources["cpu"] == "rapl" and window.baseline(Power(cpu=10.0)).cpu == pytest.approx(20.0)
    whole.close()
    shared = RecordedMachine(tmp_path / "again", "busy")
    meter = shared.meter()
    start = meter.snapshot()
    shared.run("busy_end", joules=60.0, job_s=1.9, seconds=2.0)
    idle = meter.between(start, meter.snapshot(), attribute=False)  # what measure_idle takes
    assert idle.energy.cpu == pytest.approx(60.0) and idle.job_share is None
    meter.close()
