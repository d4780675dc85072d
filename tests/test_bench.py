"""The benchmarks' own logic: reading a job's logged figures, summarising repeats, the power plot, the
sampler's CPU share. Fast: no workload runs, no CodeCarbon needed."""

from __future__ import annotations

import math
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest

from bench import codecarbon_compare as cc
from bench import common, observer
from bench.power_plot import PowerSeries, plot_power, steps


def _run(tool: str, total: float, cpu: float = 1.0, ram: float = 0.5, **bands: float) -> cc.Run:
    figures = {"cpu_j": cpu, "ram_j": ram, "total_j": total, **bands}
    return cc.Run(tool, figures, 6.0, 1000, f"{tool} cpu", f"{tool} ram")


def test_ecopipe_figures_reads_components_and_bands_whatever_the_suffix_style():
    metrics = {
        "energy_per_1k_gross_j": 3.0,
        "energy_per_1k_gross_j_low": 2.0,
        "energy_per_1k_gross_j.total": 3.0,
        "energy_per_1k_gross_j.cpu": 2.0,
        "energy_per_1k_gross_j.cpu_low": 1.5,
        "energy_per_1k_gross_j.cpu.high": 2.5,
        "energy_per_1k_gross_j.ram": 1.0,
        "energy_per_1k_gross_j.gpu": 0.0,
        "energy_per_1k_gross_ci95_j": 0.1,
        "energy_per_1k_gross_cv": 0.05,
        "energy_per_1k_net_j.cpu": 9.0,
        "energy_per_1k_gross_j.total_low": 2.1,  # the explicit total wins over the bare name
    }
    assert cc.ecopipe_figures(metrics) == {
        "total_j": 3.0,
        "total_j_low": 2.1,
        "cpu_j": 2.0,
        "cpu_j_low": 1.5,
        "cpu_j_high": 2.5,
        "ram_j": 1.0,
    }


def test_ecopipe_figures_refuses_a_run_without_its_components():
    with pytest.raises(KeyError, match="ram_j"):
        cc.ecopipe_figures({"energy_per_1k_gross_j": 3.0, "energy_per_1k_gross_j.cpu": 2.0})


def test_spread_is_median_then_range():
    assert cc.spread([3.0, 1.0, 2.0, 10.0, 2.5]) == "2.5 (1–10)"


def test_representative_is_the_repeat_nearest_every_median():
    # Repeat 2 is a's median but far from b's; repeat 3 is b's and the nearest of a's others.
    totals = {"a": [1.0, 2.0, 3.0, 4.0, 9.0], "b": [5.0, 5.0, 1.0, 5.0, 5.0]}
    assert cc.representative(totals) == 3


def test_summarise_pairs_repeats_for_the_ratio_and_shows_bands_only_when_logged():
    runs = {
        cc.ECOPIPE_DEFAULT: [_run(cc.ECOPIPE_DEFAULT, t) for t in (1.0, 2.0, 4.0)],
        "other": [_run("other", t) for t in (4.0, 4.0, 4.0)],
    }
    frame = cc.summarise(runs)
    ratio = f"total ÷ {cc.ECOPIPE_DEFAULT}, per repeat"
    assert list(frame["n"]) == [3, 3]
    assert frame.loc[1, ratio] == "2 (1–4)"  # 4/1, 4/2, 4/4: paired, not medians divided
    assert frame.loc[0, "total J / 1k: median (min–max)"] == "2 (1–4)"
    assert not any("band" in c for c in frame.columns)

    runs[cc.ECOPIPE_DEFAULT] = [
        _run(cc.ECOPIPE_DEFAULT, 1.0, cpu_j_low=0.5, cpu_j_high=2.0, ram_j_low=0.1, ram_j_high=1.0)
    ] * 3
    banded = cc.summarise(runs)
    assert banded.loc[0, "CPU band, low–high (medians)"] == "0.5–2"
    assert banded.loc[0, "total band, low–high (medians)"] == "none logged"
    assert banded.loc[1, "CPU band, low–high (medians)"] == "none logged"


def test_steps_break_between_windows_and_join_touching_intervals():
    segments = pd.DataFrame({"start_s": [0.0, 1.0, 3.0], "end_s": [1.0, 2.0, 4.0], "cpu_w": [5.0, 6.0, 7.0]})
    xs, ys = steps(segments, "cpu_w")
    assert xs[:4] == [0.0, 1.0, 1.0, 2.0] and ys[:4] == [5.0, 5.0, 6.0, 6.0]
    assert math.isnan(xs[4]) and xs[5:] == [3.0, 4.0] and ys[5:] == [7.0, 7.0]


def test_plot_power_writes_a_png(tmp_path: Path):
    segments = pd.DataFrame(
        {"start_s": [0.0, 1.0], "end_s": [1.0, 2.0], "cpu_w": [5.0, 6.0], "ram_w": [0.1, 20]}
    )
    load = pd.DataFrame({"t_s": [0.5, 1.5], "pct": [50.0, 90.0]})
    series = [PowerSeries("tool: an estimate", segments, load, "its load", "tab:blue")]
    path = plot_power(series, tmp_path / "power.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


Times = namedtuple("Times", "user system idle iowait")


def test_busy_pct_leaves_idle_and_iowait_out():
    assert cc.busy_pct(Times(0, 0, 0, 0), Times(3, 1, 3, 1)) == 50.0
    assert math.isnan(cc.busy_pct(Times(1, 1, 1, 1), Times(1, 1, 1, 1)))


class _Power:
    def __init__(self, watts: float) -> None:
        self.W = watts


class _Tracker:
    """What Intervals reads of a CodeCarbon 3.3.2 tracker."""

    def __init__(self) -> None:
        self._last_measured_time = 0.0
        self._cpu_power = self._ram_power = _Power(0.0)

    def _do_measurements(self) -> None:
        self._cpu_power, self._ram_power = _Power(2.0), _Power(1.0)


def test_intervals_record_each_measurement_as_power_over_its_interval():
    clock = iter([100.0, 102.0, 102.01])  # Intervals' own t0, then one reading per measurement
    tracker = _Tracker()
    intervals = cc.Intervals(tracker, cpus=2, clock=lambda: next(clock))
    assert tracker._do_measurements is intervals  # the tracker now measures through it
    intervals.t0 = tracker._last_measured_time = 100.0
    tracker._do_measurements()
    row = intervals.frame().iloc[0]
    assert list(row[["start_s", "end_s", "cpu_w", "ram_w"]]) == pytest.approx([0.0, 2.0, 2.0, 1.0])
    tracker._last_measured_time = 102.0
    tracker._do_measurements()  # 10 ms: CodeCarbon's measurement at start(), left out
    assert len(intervals.frame()) == 1


def test_schedstat_seconds_sums_every_thread(tmp_path: Path):
    for tid, ns in (("10", "1500000000 0 3"), ("11", "500000000 7 1")):
        (tmp_path / "10" / "task" / tid).mkdir(parents=True)
        (tmp_path / "10" / "task" / tid / "schedstat").write_text(ns + "\n")
    assert observer.schedstat_seconds(10, tmp_path) == pytest.approx(2.0)
    assert observer.schedstat_seconds(99, tmp_path) == 0.0


def test_the_sampler_target_and_its_format():
    assert observer.verdict(0.01) == "pass" and observer.verdict(0.0101) == "FAIL"
    assert observer.spread_pct([0.004, 0.005, 0.02]) == "0.50% (0.40–2.00%)"


def test_default_rate_is_the_default_monitor():
    min_hz, max_hz, frequency_hz, span = observer.default_rate()
    monitor = common.job_config().monitor
    assert (min_hz, max_hz, frequency_hz) == (monitor.min_hz, monitor.max_hz, monitor.frequency_hz)
    assert span == monitor.idle_s + monitor.trials * monitor.min_window_s


def test_write_table_carries_date_machine_header_and_notes(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    text = common.write_table(
        "x", "Title", pd.DataFrame({"a": [1]}), ["note one", "note two"], ["Versions: v"]
    )
    assert (tmp_path / "x.md").read_text() == text
    assert "Date: " in text and "Machine: " in text and "Versions: v  " in text
    assert "note one\n\nnote two" in text


def test_codecarbon_is_stopped_half_way_between_its_measurements():
    assert not cc.stop_is_clear(10.0, now=10.1)  # just after a measurement
    assert cc.stop_is_clear(10.0, now=10.5)
    assert not cc.stop_is_clear(10.0, now=10.95)  # its timer is about to fire


def test_overlaps_count_intervals_measured_twice():
    segments = pd.DataFrame({"start_s": [0.0, 1.0, 2.0, 2.0], "end_s": [1.0, 2.0, 3.0, 3.0]})
    assert cc.overlaps(segments) == 1
