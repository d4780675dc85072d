"""Differences in one axis: Welch's t on log energy against hand-computed cases, and the table a store's
repeats give, through the aggregation and its written files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ecopipe.aggregate import aggregate
from ecopipe.aggregation.differences import HIGHER, LOWER, SAME, compare
from tests.aggregation.conftest import EXPERIMENT, H100, T4, figures

# Three runs a side whose logs have variance 0.01 each: se = sqrt(2 * 0.01 / 3), Welch's df = 4, and
# t(0.975, 4) = 2.776445105 (a table value), so the interval of d is d ± 0.226696.
HALF_WIDTH = 2.776445105 * math.sqrt(2 * 0.01 / 3)
LOW_LOGS, HIGH_LOGS = (0.0, 0.1, 0.2), (0.4, 0.5, 0.6)


def exp(logs: tuple[float, ...]) -> list[float]:
    return [math.exp(x) for x in logs]


def test_a_ratio_whose_interval_excludes_one_is_lower_or_higher():
    lower = compare(exp(LOW_LOGS), exp(HIGH_LOGS))  # d = 0.1 - 0.5 = -0.4
    assert lower.ratio == pytest.approx(math.exp(-0.4))  # 0.6703
    assert (lower.low, lower.high) == pytest.approx(
        (math.exp(-0.4 - HALF_WIDTH), math.exp(-0.4 + HALF_WIDTH))
    )
    assert (round(lower.low, 4), round(lower.high, 4)) == (0.5344, 0.8409)
    assert lower.verdict == LOWER
    higher = compare(exp(HIGH_LOGS), exp(LOW_LOGS))
    assert higher.ratio == pytest.approx(1 / lower.ratio) and higher.verdict == HIGHER
    assert (higher.low, higher.high) == pytest.approx((1 / lower.high, 1 / lower.low))


def test_a_ratio_whose_interval_holds_one_is_not_distinguishable():
    # Logs 0, 0.2, 0.4 against 0.1, 0.3, 0.5: d = -0.1, variance 0.04 a side, se = sqrt(2 * 0.04 / 3).
    result = compare(exp((0.0, 0.2, 0.4)), exp((0.1, 0.3, 0.5)))
    half = 2.776445105 * math.sqrt(2 * 0.04 / 3)
    assert (result.low, result.high) == pytest.approx((math.exp(-0.1 - half), math.exp(-0.1 + half)))
    assert result.low < 1 < result.high and result.verdict == SAME


def test_unequal_spreads_take_welchs_degrees_of_freedom():
    # Logs 0, 0.2 (variance 0.02, n 2) against 0.5, 0.7, 0.9 (variance 0.04, n 3): shares 0.01 and
    # 0.04/3; df = (0.01 + 0.01333)² / (0.01² / 1 + 0.01333² / 2) = 5.4444e-4 / 1.8889e-4 = 2.882.
    result = compare(exp((0.0, 0.2)), exp((0.5, 0.7, 0.9)))
    share_a, share_b = 0.01, 0.04 / 3
    df = (share_a + share_b) ** 2 / (share_a**2 / 1 + share_b**2 / 2)
    assert df == pytest.approx(2.882, abs=1e-3)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(share_a + share_b)
    assert result.ratio == pytest.approx(math.exp(-0.6))
    assert (result.low, result.high) == pytest.approx((math.exp(-0.6 - half), math.exp(-0.6 + half)))


def test_one_run_a_side_gives_the_ratio_and_says_the_verdict_needs_repeats():
    result = compare([1.0], [2.0, 3.0])
    assert result.ratio == pytest.approx(1 / math.sqrt(6))  # over b's geometric mean
    assert math.isnan(result.low) and result.verdict.startswith("needs repeats: 1 and 2 runs")


def test_runs_that_read_alike_have_the_point_as_their_interval_and_a_figure_at_zero_is_refused():
    alike = compare([2.0, 2.0], [4.0, 4.0])
    assert (alike.ratio, alike.low, alike.high, alike.verdict) == (0.5, 0.5, 0.5, LOWER)
    assert compare([0.0, 1.0], [1.0, 2.0]).verdict.startswith("not testable")


def test_the_aggregation_compares_cells_that_differ_in_one_axis(runs, store, tmp_path):
    # fp32 and fp16 on an H100, three runs each (repeats of one config); fp32 once more on a T4.
    for log in HIGH_LOGS:
        runs.job(precision="fp32", metrics=figures(100 * math.exp(log)))
    for log in LOW_LOGS:
        runs.job(precision="fp16", metrics=figures(100 * math.exp(log)))
    runs.job(precision="fp32", hardware=T4, metrics=figures(300.0))
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path / "out")
    table = result.tables["differences"].set_index(["axis", "a", "b"])
    precision = table.loc[("precision", "fp32", "fp16")]  # fp32 first, as the tables order precisions
    assert precision["where"] == f"model=logistic_regression, hardware={H100}"
    assert (precision["runs a"], precision["runs b"]) == (3, 3)
    assert precision["ratio a/b"] == pytest.approx(math.exp(0.4))  # 1.492: fp32 draws more
    assert (precision["95% low"], precision["95% high"]) == pytest.approx(
        (math.exp(0.4 - HALF_WIDTH), math.exp(0.4 + HALF_WIDTH))
    )
    assert precision["a against b"] == HIGHER
    hardware = table.loc[("hardware", H100, T4)]  # fp32 on both; one run on the T4
    assert hardware["where"] == "model=logistic_regression, precision=fp32"
    assert hardware["ratio a/b"] == pytest.approx(100 * math.exp(0.5) / 300.0)
    assert hardware["95% low"] == "" and hardware["a against b"].startswith("needs repeats: 3 and 1")
    assert len(table) == 2  # fp16 has no T4 run: no pair across both axes
    written = pd.read_csv(tmp_path / "out" / "tables" / "differences.csv")
    assert set(written["a against b"]) == {HIGHER, hardware["a against b"]}
    assert "Differences in one axis" in (tmp_path / "out" / "summary.md").read_text()
