"""Measurement windows of the inference stage, driven by a simulated GPU (no GPU here): idle subtraction,
min-window extension, the idle baseline, trials until the CI target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ecopipe.config import Attribution, MonitorConfig
from ecopipe.job import run_job
from ecopipe.monitor.energy import Energy, EnergyMeter, Power, Window
from ecopipe.names import Tag, TagFamily
from ecopipe.results import IdleBaseline, InferenceResult, ModelFacts, TrialResult, TrialsStop
from ecopipe.sensors.estimated import EstimatedRamSensor
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.stages import inference
from ecopipe.stages.inference import measure_idle, run_inference
from ecopipe.workloads.base import Workload
from tests.fakes import ScriptedClock


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


def test_whole_stage_on_a_simulated_gpu(make_cfg, client):
    outcome = run_job(make_cfg("monitor.fake_gpu_watts=75"))
    run = client.get_run(outcome.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "fake"
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
    assert tags[Tag.NET_NEGATIVE] == str(metrics["energy_net_j.total"] < 0).lower()
    assert tags[Tag.ESS_STATUS] == "defined"  # gross attribution: positive CO2e
    history = client.get_metric_history(outcome.run_id, "trial_energy_j")
    assert [m.step for m in history] == [0, 1]
    # The trace artifact is the sampler's record of the whole measurement: the baseline and both
    # windows, at the simulated power, one row per counted sample.
    trace = pd.read_csv(client.download_artifacts(outcome.run_id, "power_trace.csv"))
    assert len(trace) == metrics["trace_samples"]
    assert (trace["power_w.gpu:gpu0"] == 75.0).all()
    assert trace["t_s"].iloc[-1] >= metrics["window_s"] + 0.05  # + monitor.idle_s


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
    from ecopipe.report import impact_tags, inference_metrics, source_tags
    from ecopipe.stages.impact import resolve_factors
    from ecopipe.summary import summary

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
    assert source_tags(result)[Tag.NET_NEGATIVE] == "true"
    factors = resolve_factors(ImpactConfig(attribution=Attribution.net), "WORLD", "datacenter")
    impact, ess, stage = footprint_stages(metrics, factors, 6.0, None, None)
    assert math.isnan(ess.ess) and "ess" not in {k for k, v in stage.items() if math.isfinite(v)}
    assert impact_tags(impact)[Tag.ESS_STATUS] == "not defined: net CO2e <= 0"
    profile = DeviceProfile("unknown", "CPU", "CPU", "datacenter", None, None, "test")
    text = summary("job", profile, result, impact, metrics | stage, "digits (as configured)")
    assert "ESS         not defined (net CO2e" in text


def test_cpu_model_override_reaches_the_job(make_cfg, client):
    outcome = run_job(make_cfg("hardware.cpu_model='AMD EPYC 7763 64-Core Processor'"))
    tags = client.get_run(outcome.run_id).data.tags
    assert tags[Tag.HARDWARE] == "AMD EPYC 7763"
    assert (tags[Tag.CPU_MICROARCH], tags[Tag.CPU_MICROARCH_HOW]) == ("zen3", "name")
    assert "cpu         zen3 (identified by name" in outcome.summary
    if tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "estimated_specpower":  # no readable RAPL here
        assert "280 W / 128 threads = 2.19 W per thread" in tags[TagFamily.ENERGY_METHOD.of("cpu")]
        assert "estimates   cpu: Zen 3 (EPYC)" in outcome.summary
    assert tags[TagFamily.ENERGY_SOURCE.of("ram")] in ("rapl", "estimated_rss")


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
