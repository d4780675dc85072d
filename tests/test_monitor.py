"""Measurement core: energy arithmetic, windows, idle subtraction, min-window extension, statistics,
the sampler, and the whole stage driven by a simulated GPU (no GPU here)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from ecopipe.config import Attribution, MonitorConfig
from ecopipe.job import run_job
from ecopipe.monitor.busy import CpuTimes, machine_busy_s
from ecopipe.monitor.energy import Energy, EnergyMeter, Power, Snapshot, Window
from ecopipe.monitor.sampler import SAMPLES_PER_E_FOLD, PowerSampler, sampling_period
from ecopipe.monitor.settle import is_flat, settle
from ecopipe.monitor.stats import estimate
from ecopipe.sensors.estimated import CpuShare, EstimatedCpuSensor, EstimatedRamSensor, cpu_power
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.rapl import RaplSensor
from ecopipe.stages import inference
from ecopipe.stages.inference import (
    IdleBaseline,
    InferenceResult,
    TrialResult,
    TrialsStop,
    measure_idle,
    run_inference,
)
from ecopipe.workloads.base import ModelFacts, Workload
from tests.conftest import make_zone


class ScriptedClock:
    """Time the test moves by hand; `read_cost_s` also moves it at every read, as real reads take time."""

    def __init__(self, read_cost_s: float = 0.0) -> None:
        self.now = 0.0
        self.read_cost_s = read_cost_s

    def __call__(self) -> float:
        self.now += self.read_cost_s
        return self.now


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


def test_confidence_interval_hand_computed():
    result = estimate([1.0, 2.0, 3.0])
    # mean 2, sample std 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    assert result.mean == 2.0
    assert result.ci95 == pytest.approx(2.484138, rel=1e-6)
    assert result.cv == pytest.approx(0.5)
    assert result.n == 3
    one = estimate([5.0])  # one trial: a mean, no spread
    assert (one.mean, one.n) == (5.0, 1) and math.isnan(one.ci95) and math.isnan(one.cv)
    assert math.isnan(estimate([-1.0, 1.0]).cv)  # a zero mean has no coefficient of variation


def _result(trials: Sequence[TrialResult], idle: Power) -> InferenceResult:
    return InferenceResult(
        device="cpu",
        sources={"gpu": "fake", "cpu": "none", "ram": "none"},
        measured={"gpu": False, "cpu": False, "ram": False},
        methods={},
        resolution_s={},
        facts=ModelFacts(10, 10.0, "float32", "fitted"),
        load=Window(Energy(), 0.0),
        fit=None,
        baseline=IdleBaseline(Window(idle * 1.0, 1.0), None),  # idle W over 1 s
        trials=tuple(trials),
        quality={},
        batch_latencies_s=(),
        batch_size=1,
        trace=None,
    )


def test_idle_subtraction_and_per_1k():
    # Trial 1: 2 s, 120 J on the GPU, 500 samples; trial 2: 4 s, 220 J, 1000 samples; idle 20 W.
    trials = [
        TrialResult(Window(Energy(gpu=120.0), 2.0), passes=1, samples=500, tokens_in=0, tokens_out=0),
        TrialResult(Window(Energy(gpu=220.0), 4.0), passes=2, samples=1000, tokens_in=0, tokens_out=0),
    ]
    result = _result(trials, Power(gpu=20.0))
    assert result.gross.gpu == 340.0
    assert result.idle.gpu == 120.0  # 20 W x 6 s
    assert result.net.gpu == 220.0
    # gross per 1k: 240 and 220 -> mean 230; net per 1k: (120-40)*2 = 160 and (220-80) = 140 -> 150
    assert result.per_1k_samples(Attribution.gross).mean == pytest.approx(230.0)
    assert result.per_1k_samples(Attribution.net).mean == pytest.approx(150.0)
    # two trials 160/140: std 14.142, t(0.975,1) = 12.7062 -> half-width 12.7062 x 14.142 / sqrt 2 = 127.06
    assert result.per_1k_samples(Attribution.net).ci95 == pytest.approx(127.062, rel=1e-4)
    assert result.throughput.mean == pytest.approx(250.0)


class ClockedWorkload(Workload):
    """Two batches of 3 samples per pass; each batch advances the scripted clock by 0.1 s."""

    def __init__(self, clock: ScriptedClock) -> None:
        self.clock, self.loaded, self.fitted = clock, False, False

    def load(self) -> None:
        self.loaded = True

    def batches(self):
        return [[1, 2, 3], [4, 5, 6]]

    def predict(self, batch):
        self.clock.now += 0.1
        return batch

    def quality(self, outputs):
        return {"outputs": float(len(outputs))}

    def facts(self) -> ModelFacts:
        return ModelFacts(6, 6.0, "int", "fitted")


EPYC_7763 = "AMD EPYC 7763 64-Core Processor"


def test_window_extends_to_min_window(monkeypatch):
    clock = ScriptedClock(read_cost_s=1e-4)  # reads take time: net stays exactly zero all the same
    meter = EnergyMeter(
        [FakeGpuSensor(100.0, clock=clock), EstimatedRamSensor.installed(8.0, clock=clock)], clock=clock
    )
    meter.open()
    monitor = MonitorConfig(trials=2, min_window_s=1.0, min_iterations=1, warmup_batches=1, idle_s=0.5)
    monkeypatch.setattr(inference, "_IDLE_CACHE", {})
    result = run_inference(
        ClockedWorkload(clock),
        meter,
        monitor,
        batch_size=3,
        sleep=lambda s: setattr(clock, "now", clock.now + s),
    )
    # 0.2 s per pass: a window reaches 1.0 s after 5 passes = 30 samples.
    assert [t.passes for t in result.trials] == [5, 5]
    assert [t.samples for t in result.trials] == [30, 30]
    assert result.trials[0].window.duration_s == pytest.approx(1.0, abs=0.01)
    window = result.trials[0].window
    assert window.energy.gpu == pytest.approx(100.0 * window.duration_s, rel=1e-12)
    assert result.idle_power.gpu == pytest.approx(100.0, rel=1e-12)
    assert result.idle_power.ram == pytest.approx(3.0, rel=1e-12)
    # Constant power idle and busy: net is zero to rounding, not within a few percent of gross.
    assert abs(result.net.total) < 1e-9 * result.gross.total and not result.net_negative
    assert result.quality == {"outputs": 2.0}  # scored on one pass over the data: its 2 batches


def test_idle_baseline_cached_per_state(monkeypatch):
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(80.0, clock=clock)], clock=clock)
    meter.open()
    monkeypatch.setattr(inference, "_IDLE_CACHE", {})
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    first = measure_idle(meter, 2.0, "cuda:0:model_loaded", sleep)
    again = measure_idle(meter, 2.0, "cuda:0:model_loaded", sleep)
    other = measure_idle(meter, 2.0, "cpu:model_loaded", sleep)
    assert again == replace(first, reused=True)  # served from the cache, and said to be
    assert first.window.power.gpu == pytest.approx(80.0) and other.window.power.gpu == pytest.approx(80.0)
    assert sleeps == [2.0, 2.0]  # the repeated state was served from the cache
    assert first.settling is None and not first.reused  # no wait asked (settle_max_s 0)
    assert measure_idle(meter, 0.0, "x", sleep) is None


def _decaying_gpu_meter(watts):
    """A simulated GPU whose power after warm-up is `watts(t)`, on a clock the test's sleeps move."""
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(watts, clock=clock)], clock=clock)
    meter.open()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    return meter, sleep


def test_idle_baseline_waits_for_power_to_settle(monkeypatch):
    monkeypatch.setattr(inference, "_IDLE_CACHE", {})
    # 100 W falling to 60 W with a 1-s time constant: flat within 5% once the excess is ~1 W.
    meter, sleep = _decaying_gpu_meter(lambda t: 60.0 + 40.0 * math.exp(-t))
    baseline = measure_idle(meter, 2.0, "cuda:0", sleep, settle_max_s=30.0, settle_tolerance=0.05)
    settling = baseline.settling
    assert settling.settled and 1.0 < settling.seconds < 30.0
    assert settling.window_s == 0.2  # the floor: the fake refreshes continuously
    # Windows read from the meter: each the mean of the curve over its 0.2 s, in order.
    t = np.arange(len(settling.watts)) * 0.2
    expected = 60.0 + 40.0 * (np.exp(-t) - np.exp(-(t + 0.2))) / 0.2
    assert settling.watts == pytest.approx(tuple(expected), rel=1e-6)
    # Without the wait, the baseline would read the tail of the work: over 60 W by more than 5%.
    assert baseline.window.power.gpu == pytest.approx(60.0, rel=0.05)
    assert "settled in" in settling.describe() and "NOT" not in settling.describe()


def test_idle_baseline_says_when_power_did_not_settle(monkeypatch):
    monkeypatch.setattr(inference, "_IDLE_CACHE", {})
    # Halving every 1.4 s: three 0.2-s windows always differ by about 18% of their mean.
    meter, sleep = _decaying_gpu_meter(lambda t: 100.0 * math.exp(-t / 2))
    settling = measure_idle(meter, 1.0, "cuda:0", sleep, settle_max_s=3.0).settling
    assert not settling.settled and settling.seconds == pytest.approx(3.0)
    assert len(settling.watts) == 15 and "did NOT settle in 3.0 s" in settling.describe()


def test_sampling_period_adapts():
    assert sampling_period(0.0, 1.0, 50.0, None) == pytest.approx(0.02)  # fast start: max_hz
    assert sampling_period(10.0, 1.0, 50.0, None) == pytest.approx(10.0 / SAMPLES_PER_E_FOLD)
    assert sampling_period(1000.0, 1.0, 50.0, None) == pytest.approx(1.0)  # bounded by min_hz
    assert sampling_period(1000.0, 1.0, 50.0, 10.0) == pytest.approx(0.1)  # pinned


def test_sampler_records_trace_and_its_cost():
    sensor = FakeGpuSensor(42.0)
    sensor.open()
    sampler = PowerSampler([sensor], frequency_hz=100.0)  # pinned: one sample every 10 ms
    sampler.start()
    time.sleep(0.5)
    trace = sampler.stop()
    samples = trace.samples
    assert set(samples.columns) >= {"t_s", "power_w.gpu:gpu0", "process.cpu_pct", "process.rss_mb"}
    assert (samples["power_w.gpu:gpu0"] == 42.0).all()
    assert samples["t_s"].is_monotonic_increasing
    # 0.5 s at 100 Hz is at most ~50 samples, never closer than 10 ms apart (but the end-of-window one),
    # and typically 10 ms apart: a sampler that recorded only the window's edges, ran unpaced, or ran at
    # a fraction of its rate fails. The median leaves room for a busy machine, where the sampler (at low
    # priority) may wake late now and then.
    gaps = samples["t_s"].diff().iloc[1:-1]
    assert 5 <= len(samples) <= 60
    assert gaps.min() >= 0.009 and gaps.median() <= 0.025
    # It watches this process: its RSS is ours (within what Python allocates between the reads).
    ours_mb = psutil.Process().memory_info().rss / 2**20
    assert samples["process.rss_mb"].iloc[-1] == pytest.approx(ours_mb, rel=0.1)
    # Its cost: its own CPU time (read, not NaN) over the window's wall time, well under one core.
    assert trace.wall_s == pytest.approx(0.5, abs=0.25)
    assert 0.0 <= trace.sampler_cpu_s < 0.5 * trace.wall_s


def test_whole_stage_on_a_simulated_gpu(make_cfg, client):
    outcome = run_job(make_cfg("monitor.fake_gpu_watts=75"))
    run = client.get_run(outcome.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["energy_source.gpu"] == "fake"
    # The fake GPU draws 75 W: its gross energy is 75 W x the window, the idle baseline 75 W. One
    # timestamp per snapshot makes both exact to rounding, however short the window.
    assert metrics["energy_gross_j.gpu"] == pytest.approx(75.0 * metrics["window_s"], rel=1e-9)
    assert metrics["idle_power_w.gpu"] == pytest.approx(75.0, rel=1e-9)
    assert metrics["energy_gross_j.total"] == pytest.approx(
        metrics["energy_gross_j.gpu"] + metrics["energy_gross_j.cpu"] + metrics["energy_gross_j.ram"]
    )
    # One timestamp per snapshot: a constant-power GPU's net is zero to rounding.
    assert abs(metrics["energy_net_j.gpu"]) < 1e-6 * metrics["energy_gross_j.gpu"]
    # The flag follows the net total; over 0.05-s windows the CPU estimate's 10-ms CPU-time ticks decide
    # its sign, so the test does not presume one.
    assert tags["ecopipe.net_negative"] == str(metrics["energy_net_j.total"] < 0).lower()
    assert tags["ecopipe.ess"] == "defined"  # gross attribution: positive CO2e
    history = client.get_metric_history(outcome.run_id, "trial_energy_j")
    assert [m.step for m in history] == [0, 1]
    # The trace artifact is the sampler's record of the whole measurement: the baseline and both
    # windows, at the simulated power, one row per counted sample.
    trace = pd.read_csv(client.download_artifacts(outcome.run_id, "power_trace.csv"))
    assert len(trace) == metrics["trace_samples"]
    assert (trace["power_w.gpu:gpu0"] == 75.0).all()
    assert trace["t_s"].iloc[-1] >= metrics["window_s"] + 0.05  # + monitor.idle_s


def test_sampler_is_left_out_of_the_cpu_estimate():
    # The sampler is a child of the job: a CPU estimate from the job's CPU time must not charge it. The
    # job sleeps, so its utilisation is ~0 and the estimate stays at the idle figure.
    share = CpuShare(cpu_power(EPYC_7763), 1, "given")  # one thread: the sampler's CPU would show fully
    idle, full = share.power.coefficients.idle_w[1], share.power.coefficients.full_w[1]
    sensor = EstimatedCpuSensor(share)
    sensor.open()
    sampler = PowerSampler([sensor], min_hz=500.0, max_hz=500.0)
    sampler.start()
    start, t0 = sensor.read_joules(), time.perf_counter()
    time.sleep(1.0)
    joules, elapsed = sensor.read_joules() - start, time.perf_counter() - t0
    trace = sampler.stop()
    charged = (joules / elapsed - idle) / (full - idle)  # the utilisation the estimate charged
    # Had its CPU counted, the sampler alone would have been charged this utilisation:
    sampler_share = trace.sampler_cpu_s / elapsed
    assert sampler_share > 0.004  # it does cost something at 500 Hz, so the next check can fail
    assert charged < sampler_share / 2


def test_idle_baseline_keyed_on_model_and_precision(monkeypatch):
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(80.0, clock=clock)], clock=clock)
    meter.open()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    monitor = MonitorConfig(trials=1, min_window_s=0.1, warmup_batches=0, idle_s=0.5)
    for key in ("logistic_regression:fp32", "svc:fp32", "logistic_regression:fp32", "svc:int8"):
        run_inference(ClockedWorkload(clock), meter, monitor, batch_size=3, sleep=sleep, idle_key=key)
    # Each new baseline: three 0.2-s settle windows (a flat 80 W), then the 0.5-s baseline; the third
    # job repeats the first's model and precision, so it neither settles nor sleeps again.
    assert sleeps == [0.2, 0.2, 0.2, 0.5] * 3


def test_negative_net_is_flagged_and_ess_not_defined(monkeypatch, caplog):
    from ecopipe.config import ImpactConfig
    from ecopipe.hardware import DeviceProfile
    from ecopipe.job import footprint_stages
    from ecopipe.report import impact_tags, inference_metrics, source_tags, summary
    from ecopipe.stages.impact import resolve_factors

    # The GPU draws 100 W while idle is measured (no settle: something else ran then), then 50 W in the
    # windows: net is negative.
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(lambda t: 100.0 if t < 0.5 else 50.0, clock=clock)], clock=clock)
    meter.open()
    monitor = MonitorConfig(trials=2, min_window_s=0.4, warmup_batches=0, idle_s=0.5, settle_max_s=0.0)
    with caplog.at_level("WARNING"):
        result = run_inference(
            ClockedWorkload(clock), meter, monitor, 3, sleep=lambda s: setattr(clock, "now", clock.now + s)
        )
    assert result.net_negative and "net energy is NEGATIVE" in caplog.text
    # Net per trial: (50 - 100) W x 0.4 s = -20 J over 12 samples (the 1-ms step smears 0.1%).
    assert result.per_1k_samples(Attribution.net).mean == pytest.approx(-20.0 * 1000 / 12, rel=0.005)
    metrics = inference_metrics(result)
    assert metrics["energy_per_1k_net_j"] < 0  # reported, not dropped
    assert source_tags(result)["ecopipe.net_negative"] == "true"
    factors = resolve_factors(ImpactConfig(attribution=Attribution.net), "WORLD", "datacenter")
    impact, ess, stage = footprint_stages(metrics, factors, 6.0, None, None)
    assert math.isnan(ess.ess) and "ess" not in {k for k, v in stage.items() if math.isfinite(v)}
    assert impact_tags(impact)["ecopipe.ess"] == "not defined: net CO2e <= 0"
    profile = DeviceProfile("unknown", "CPU", "CPU", "datacenter", None, None, "test")
    text = summary("job", profile, result, impact, metrics | stage, "digits (as configured)")
    assert "ESS         not defined (net CO2e" in text


def test_cpu_model_override_reaches_the_job(make_cfg, client):
    outcome = run_job(make_cfg("hardware.cpu_model='AMD EPYC 7763 64-Core Processor'"))
    tags = client.get_run(outcome.run_id).data.tags
    assert tags["ecopipe.hardware"] == "AMD EPYC 7763"
    assert (tags["hardware.cpu_microarch"], tags["hardware.cpu_microarch_identified_by"]) == ("zen3", "name")
    assert "cpu         zen3 (identified by name" in outcome.summary
    if tags["energy_source.cpu"] == "estimated_specpower":  # no readable RAPL here
        assert "280 W / 128 threads = 2.19 W per thread" in tags["energy_method.cpu"]
        assert "estimates   cpu: Zen 3 (EPYC)" in outcome.summary
    assert tags["energy_source.ram"] in ("rapl", "estimated_rss")


class NoisyGpu(FakeGpuSensor):
    """A simulated GPU whose power changes every read (seeded), so trials differ by ~30%."""

    def __init__(self, clock: ScriptedClock) -> None:
        super().__init__(100.0, clock=clock)
        self.rng, self.joules, self.last = np.random.default_rng(0), 0.0, 0.0

    def read_joules_at(self, at: float) -> float:
        self.joules += (at - self.last) * 100.0 * (1 + 0.3 * self.rng.standard_normal())
        self.last = at
        return self.joules


@pytest.mark.parametrize(
    ("noisy", "trials", "stop"),
    [(False, 3, TrialsStop.TARGET), (True, 6, TrialsStop.MAX_TRIALS)],
)
def test_trials_go_on_until_the_ci_target_or_the_cap(monkeypatch, noisy, trials, stop):
    clock = ScriptedClock()
    gpu = NoisyGpu(clock) if noisy else FakeGpuSensor(100.0, clock=clock)
    meter = EnergyMeter([gpu], clock=clock)
    meter.open()
    monkeypatch.setattr(inference, "_IDLE_CACHE", {})
    monitor = MonitorConfig(trials=3, target_rel_ci=0.05, max_trials=6, min_window_s=0.4, warmup_batches=0)
    result = run_inference(
        ClockedWorkload(clock), meter, monitor, 3, sleep=lambda s: setattr(clock, "now", clock.now + s)
    )
    # Constant power: the CI is zero at the third trial, the fewest asked for. Noisy: never within 5%.
    assert (len(result.trials), result.trials_stop) == (trials, stop)
    e = result.per_1k_samples(Attribution.gross)
    assert (e.ci95 <= 0.05 * e.mean) == (stop is TrialsStop.TARGET)
    fixed = run_inference(
        ClockedWorkload(clock), meter, MonitorConfig(trials=2, min_window_s=0.4, warmup_batches=0), 3,
        sleep=lambda s: setattr(clock, "now", clock.now + s),
    )  # fmt: skip
    assert (len(fixed.trials), fixed.trials_stop) == (2, TrialsStop.FIXED)


# --- the idle settle ---------------------------------------------------------------------------------------


def scripted_counter(watts: list[float], window_s: float):
    """A counter (J) whose power over each settle window is the next of `watts`, on a clock that sleeps."""
    now, energy_j, windows = [0.0], [0.0], iter(watts)

    def sleep(seconds: float) -> None:
        energy_j[0] += next(windows) * seconds
        now[0] += seconds

    return (lambda: energy_j[0]), sleep, (lambda: now[0])


def test_idle_settles_when_three_readings_agree_or_says_it_did_not():
    read, sleep, clock = scripted_counter([120.0, 95.0, 80.0, 71.0, 70.0, 69.5, 70.2, 99.0], 1.0)
    found = settle(read, 1.0, 20.0, sleep, clock)
    assert found.settled and found.watts == pytest.approx((120, 95, 80, 71, 70, 69.5))
    assert found.settled_w == pytest.approx(70.1666, rel=1e-4) and found.seconds == pytest.approx(6.0)
    read, sleep, clock = scripted_counter([120.0, 100.0, 90.0, 80.0, 70.0, 60.0], 1.0)
    falling = settle(read, 1.0, 4.0, sleep, clock)
    assert not falling.settled and len(falling.watts) == 4 and falling.seconds == pytest.approx(4.0)
    assert (
        not is_flat([70.0, 70.0]) and is_flat([100.0, 70.0, 71.0, 72.0]) and not is_flat([70.0, 71.0, 74.0])
    )


# --- a whole-machine counter charged at the job's share ----------------------------------------------------

PROC_STAT = Path(__file__).parent / "data" / "proc_stat"


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


def test_a_trace_gets_each_estimates_power_at_its_samples_and_a_counter_none():
    """Without counters the trace still shows power: each model's point estimate at the CPU use and
    memory of each sample, in a column that says it is an estimate; a counter adds no column here (the
    sampler reads it itself)."""
    from ecopipe.monitor.sampler import Trace, with_estimated_power

    share = CpuShare(cpu_power(EPYC_7763), 2, "given")  # Zen 3: idle 0.455625 W per thread
    idle, full = share.power.coefficients.idle_w[1], share.power.coefficients.full_w[1]
    samples = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "process.cpu_pct": [0.0, 100.0, 250.0],
                            "process.rss_mb": [1024.0, 3072.0, 512.0]})  # fmt: skip
    sensors = [
        FakeGpuSensor(250.0),
        EstimatedCpuSensor(share),
        EstimatedRamSensor.held_by_job(allowance_gb=1.0),
        EstimatedRamSensor.installed(8.0),
    ]
    traced = with_estimated_power(Trace(samples, 2.0, 0.1), sensors[:3]).samples
    assert list(traced.columns) == [*samples.columns, "estimated_power_w.cpu", "estimated_power_w.ram"]
    # one of two threads busy is half the load; 250% is more than the job's threads: full load
    assert traced["estimated_power_w.cpu"].tolist() == pytest.approx(
        [2 * idle, 2 * (idle + 0.5 * (full - idle)), 2 * full]
    )
    # beyond the 1 GiB the CPU figure counts, at 0.375 W/GB
    assert traced["estimated_power_w.ram"].tolist() == pytest.approx([0.0, 2 * 0.375, 0.0])
    installed = with_estimated_power(Trace(samples, 2.0, 0.1), sensors[3:]).samples
    assert installed["estimated_power_w.ram"].tolist() == pytest.approx([3.0] * 3)
