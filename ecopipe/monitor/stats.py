"""Summary statistics of repeated trials: mean, coefficient of variation, 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci95: float  # half-width of the 95% confidence interval (Student's t); nan with one trial
    cv: float  # coefficient of variation (sample std / mean); nan with one trial or a zero mean
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def estimate(values: Sequence[float]) -> Estimate:
    n = len(values)
    if n == 0:
        raise ValueError("no trial to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half_width = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    cv = std / mean if mean else math.nan
    return Estimate(mean, half_width, cv, n)
