"""Statistics of the trials by hand."""

from __future__ import annotations

import math

import pytest

from ecopipe.monitor.stats import estimate


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
