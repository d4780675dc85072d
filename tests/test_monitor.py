"""Measurement core: energy arithmetic, windows, idle subtraction, min-window extension, statistics,
the sampler, and the whole stage driven by a simulated GPU (no GPU here)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from ecopipe.config import Attribution, MonitorConfig
from ecopipe.job import run_job
from ecopipe.monitor.energy import Energy, EnergyMeter, Power, Window
from ecopipe.monitor.sampler import SAMPLES_PER_E_FOLD, PowerSampler, sampling_period
from ecopipe.monitor.stats import estimate
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.stages import inference
from ecopipe.stages.inference import InferenceResult, TrialResult, measure_idle, run_inference
from ecopipe.workloads.base import ModelFacts, Workload


class ScriptedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
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


def test_confidence_interval_hand_computed():
    result = estimate([1.0, 2.0, 3.0])
    # mean 2, sample std 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    assert result.mean == 2.0
    assert result.ci95 == pytest.approx(2.484138, rel=1e-6)
    assert result.cv == pytest.approx(0.5)
    assert math.isnan(estimate([5.0]).ci95)


def _result(trials: Sequence[TrialResult], idle: Power) -> InferenceResult:
    return InferenceResult(
        device="cpu",
        sources={},
        measured={},
        resolution_s={},
        facts=ModelFacts(10, 10.0, "float32", "fitted"),
        load=Window(Energy(), 0.0),
        fit=None,
        idle_power=idle,
        idle_measured=True,
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


def test_window_extends_to_min_window(monkeypatch):
    clock = ScriptedClock()
    meter = EnergyMeter([FakeGpuSensor(100.0, clock=clock)], clock=clock)
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
    assert result.trials[0].window.duration_s == pytest.approx(1.0)
    assert result.trials[0].window.energy.gpu == pytest.approx(100.0)
    assert result.idle_power.gpu == pytest.approx(100.0)
    assert result.net.gpu == pytest.approx(0.0, abs=1e-6)
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
    assert first is again  # served from the cache
    assert first.gpu == pytest.approx(80.0) and other.gpu == pytest.approx(80.0)
    assert sleeps == [2.0, 2.0]  # the repeated state was served from the cache
    assert measure_idle(meter, 0.0, "x", sleep) is None


def test_sampling_period_adapts():
    assert sampling_period(0.0, 1.0, 50.0, None) == pytest.approx(0.02)  # fast start: max_hz
    assert sampling_period(10.0, 1.0, 50.0, None) == pytest.approx(10.0 / SAMPLES_PER_E_FOLD)
    assert sampling_period(1000.0, 1.0, 50.0, None) == pytest.approx(1.0)  # bounded by min_hz
    assert sampling_period(1000.0, 1.0, 50.0, 10.0) == pytest.approx(0.1)  # pinned


def test_sampler_records_trace_and_its_cost():
    sensor = FakeGpuSensor(42.0)
    sensor.open()
    sampler = PowerSampler([sensor], min_hz=1.0, max_hz=200.0)
    sampler.start()
    sum(i * i for i in range(300_000))  # some work on the main thread
    trace = sampler.stop()
    assert len(trace.samples) >= 2  # the first sample and the end-of-window sample at least
    assert set(trace.samples.columns) >= {"t_s", "power_w.gpu:gpu0", "process.cpu_pct", "process.rss_mb"}
    assert (trace.samples["power_w.gpu:gpu0"].dropna() == 42.0).all()
    assert trace.samples["t_s"].is_monotonic_increasing
    assert 0.0 <= trace.overhead_frac < 1.0


def test_whole_stage_on_a_simulated_gpu(make_cfg, client):
    outcome = run_job(make_cfg("monitor.fake_gpu_watts=75"))
    run = client.get_run(outcome.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["energy_source.gpu"] == "fake"
    # The fake GPU draws 75 W: its gross energy is 75 W x the window, the idle baseline 75 W.
    assert metrics["energy_gross_j.gpu"] == pytest.approx(75.0 * metrics["window_s"], rel=1e-3)
    assert metrics["idle_power_w.gpu"] == pytest.approx(75.0, rel=1e-3)
    assert metrics["energy_net_j.gpu"] == pytest.approx(0.0, abs=0.05 * metrics["energy_gross_j.gpu"])
    assert metrics["energy_gross_j.total"] == pytest.approx(
        metrics["energy_gross_j.gpu"] + metrics["energy_gross_j.cpu"] + metrics["energy_gross_j.ram"]
    )
    assert 0 <= metrics["monitor_overhead_frac"] < 1 and metrics["trace_samples"] >= 2
    history = client.get_metric_history(outcome.run_id, "trial_energy_j")
    assert [m.step for m in history] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert "power_trace.csv" in artifacts
