"""The GPU check's counter step (bench/gpu/counter.py): two NVML signals read by a second process,
compared with the per-trial edges and energy a job logs."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from bench.gpu.counter import TrialComparison, compare, counter_between, power_between, record
from ecopipe.job import run_job


def test_counter_comparison_interpolates_the_counter_and_integrates_the_power_field():
    trace = pd.DataFrame(
        {
            "unix_s": [10.0, 11.0, 12.0, 13.0],
            "energy_mj": [0.0, 1000.0, 3000.0, 6000.0],
            "power_w": [1.0, 1.0, 3.0, 3.0],
        }
    )
    # By hand: counter 500 mJ at 10.5 s, 4500 mJ at 12.5 s -> 4.0 J. Power 1 W from 10.5 to 11 (0.5 J),
    # 1 -> 3 W from 11 to 12 (2 J), 3 W from 12 to 12.5 (1.5 J) -> 4.0 J.
    assert counter_between(trace, 10.5, 12.5) == pytest.approx(4.0)
    assert power_between(trace, 10.5, 12.5) == pytest.approx(4.0)
    # 11.5 -> 13: counter 2000 -> 6000 mJ = 4.0 J; power 2 W at 11.5: 1.25 J + 3 J = 4.25 J.
    first, second = compare(trace, [10.5, 11.5], [12.5, 13.0], [4.04, 4.4])
    assert (first.counter_j, first.job_vs_counter, first.power_field_vs_counter) == pytest.approx(
        (4.0, 1.01, 1.0)
    )
    assert first.problems() == []  # 1% and 0%: within 3% and 15%
    assert (second.job_vs_counter, second.power_field_vs_counter) == pytest.approx((1.1, 1.0625))
    (problem,) = second.problems()
    assert "job's counter reading is +10.0%" in problem and "tolerance 3%" in problem
    with pytest.raises(ValueError, match="not inside the trace"):
        counter_between(trace, 9.0, 12.0)


def test_counter_check_flags_a_power_field_off_and_a_counter_that_does_not_move():
    off = TrialComparison(0, 0.0, 5.0, job_j=100.0, counter_j=100.0, power_field_j=80.0)
    assert off.problems() == [
        "trial 1: the power field's integral is -20.0% from the counter (tolerance 15%)"
    ]
    stuck = TrialComparison(1, 0.0, 5.0, job_j=0.0, counter_j=0.0, power_field_j=300.0)
    assert stuck.problems() == ["trial 2: the counter did not move (0 J)"]


def test_counter_recorder_writes_timestamped_rows_at_its_rate(tmp_path):
    stop = threading.Event()
    reads = iter(range(0, 10**6, 7))
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    record(lambda: (float(next(reads)), 42.0), tmp_path / "trace.csv", hz=50, stop=stop)
    trace = pd.read_csv(tmp_path / "trace.csv")
    assert list(trace.columns) == ["unix_s", "energy_mj", "power_w"]
    assert len(trace) >= 15 and trace["unix_s"].diff().median() == pytest.approx(0.02, abs=0.01)  # 50 Hz
    assert trace["unix_s"].is_monotonic_increasing and list(trace["energy_mj"][:3]) == [0.0, 7.0, 14.0]
    assert set(trace["power_w"]) == {42.0}


def test_job_logs_each_trials_wall_clock_edges_and_gpu_energy(make_cfg, client):
    watts = 250.0
    outcome = run_job(make_cfg("monitor.trials=3", f"monitor.fake_gpu_watts={watts}"))
    history = {
        key: [m.value for m in sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)]
        for key in ("trial_start_unix_s", "trial_end_unix_s", "trial_window_s", "trial_energy_j.gpu")
    }
    run = client.get_run(outcome.run_id).info
    starts, ends = history["trial_start_unix_s"], history["trial_end_unix_s"]
    assert len(starts) == len(ends) == 3
    assert run.start_time / 1000 <= starts[0] and ends[-1] <= run.end_time / 1000
    for i in range(3):
        # Both from the meter's one clock: no scheduling gap between two clock reads (a flake at 2 ms).
        assert ends[i] - starts[i] == pytest.approx(history["trial_window_s"][i], abs=1e-5)
        assert history["trial_energy_j.gpu"][i] == pytest.approx(
            watts * history["trial_window_s"][i], rel=1e-2
        )
        assert i == 0 or starts[i] >= ends[i - 1]
