"""The sampler's process and its trace: adaptive rate, its own cost, left out of the estimates."""

from __future__ import annotations

import time

import pandas as pd
import psutil
import pytest

from ecopipe.monitor.sampler import SAMPLES_PER_E_FOLD, PowerSampler, sampling_period
from ecopipe.sensors.estimated import CpuShare, EstimatedCpuSensor, EstimatedRamSensor, cpu_power
from ecopipe.sensors.fake import FakeGpuSensor
from tests.fakes import EPYC_7763


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
