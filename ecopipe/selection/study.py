"""Savings and accuracy differences between measured arms, with their 95% intervals.

Every arm (a member alone, a strategy) was measured by the inference stage in the same trials'
protocol over the same test split (`InferenceResult.arms`). Energy per input of arm s against a
reference r: the ratio of their mean joules per 1,000 inputs, with a 95% interval from the delta
method on the log ratio (each arm's trials independent; Welch-Satterthwaite degrees of freedom);
savings = 1 - ratio. Accuracy difference: paired over the same test rows, mean of (s right) - (r
right) with a normal 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ecopipe.monitor.stats import Estimate
from ecopipe.names import CI95_HIGH, CI95_LOW


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_metrics(self, key: str) -> dict[str, float]:
        return {key: self.value, f"{key}{CI95_LOW}": self.low, f"{key}{CI95_HIGH}": self.high}

    def percent(self) -> str:
        if not math.isfinite(self.low):
            return f"{100 * self.value:.1f}% (no interval: one trial)"
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def ratio(arm: Estimate, reference: Estimate) -> Interval:
    """mean(arm) / mean(reference) and its 95% interval; nan bounds with a single trial."""
    value = arm.mean / reference.mean
    if arm.n < 2 or reference.n < 2 or not (arm.mean > 0 and reference.mean > 0):
        return Interval(value, math.nan, math.nan)
    # The stage's CI half-width is t * sd / sqrt(n): recover each arm's variance of the log mean.
    parts = [(e.ci95 / float(stats.t.ppf(0.975, e.n - 1)) / e.mean) ** 2 for e in (arm, reference)]
    variance = sum(parts)
    if variance == 0:
        return Interval(value, value, value)
    dof = variance**2 / sum(p**2 / (e.n - 1) for p, e in zip(parts, (arm, reference), strict=True))
    half = float(stats.t.ppf(0.975, dof)) * math.sqrt(variance)
    return Interval(value, value * math.exp(-half), value * math.exp(half))


def savings(arm: Estimate, reference: Estimate) -> Interval:
    """1 - arm / reference: the share of the reference's energy (or time) the arm saves."""
    r = ratio(arm, reference)
    return Interval(1 - r.value, 1 - r.high, 1 - r.low)


def accuracy_difference(right: np.ndarray, reference_right: np.ndarray) -> Interval:
    """Paired difference of accuracy over the same rows (arm - reference) and its 95% interval."""
    d = right.astype(np.float64) - reference_right.astype(np.float64)
    mean = float(d.mean())
    half = 1.959964 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return Interval(mean, mean - half, mean + half)


def pick(values: Sequence[float], ties: Sequence[float]) -> int:
    """Position of the largest value; among equal ones, the smallest tie-break (the cheapest)."""
    return min(range(len(values)), key=lambda i: (-values[i], ties[i]))
