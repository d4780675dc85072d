"""Summary statistics of repeated trials: mean, coefficient of variation, 95% confidence interval, and
the band a reader should quote where an estimate's coefficients have a range."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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


UNRESOLVED_REL_CI = 0.5  # a 95% CI half-width above half the figure: the trials do not pin it down
UNRESOLVED_ADVICE = (
    "more trials (monitor.trials), longer windows (monitor.min_window_s) or monitor.target_rel_ci=0.05 "
    "narrow it"
)


def unresolved(mean: float, ci95: float) -> bool:
    """Whether a figure's 95% CI half-width exceeds half of it: its value is not resolved."""
    return math.isfinite(mean) and math.isfinite(ci95) and ci95 > UNRESOLVED_REL_CI * abs(mean)


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


@dataclass(frozen=True)
class Band:
    """A figure and the range to quote with it: low <= point <= high.

    For a measurement it is the point's 95% CI; for an estimate it also spans its coefficients'
    range (band_of). A figure with neither (one trial, a measured total) has low = point = high.
    """

    low: float
    point: float
    high: float

    def __post_init__(self) -> None:
        ordered = self.low <= self.point <= self.high  # an unbounded end (inf) still has an order
        if not ordered and not any(math.isnan(v) for v in (self.low, self.point, self.high)):
            raise ValueError(f"a band needs low <= point <= high, got {self}")

    def scaled(self, factor: float) -> Band:
        """The band of `factor` x the figure (a negative factor swaps the ends)."""
        ends = sorted((self.low * factor, self.high * factor))
        return Band(ends[0], self.point * factor, ends[1])

    def floored(self, floor: float = 0.0) -> Band:
        """The band with its low end raised to a physical floor (a gross energy is never below 0)."""
        return Band(max(self.low, floor), max(self.point, floor), max(self.high, floor))

    @property
    def exact(self) -> bool:
        return self.low == self.point == self.high


def spread(values: Iterable[float]) -> Band:
    """Low and high of a few computed values around the middle one (point)."""
    low, point, high = values
    return Band(min(low, point, high), point, max(low, point, high))


def band_of(low: Sequence[float], point: Sequence[float], high: Sequence[float]) -> Band:
    """The band of a per-trial figure computed at the low, point and high coefficients.

    Its point is the mean of the point values; its ends are the lowest and highest of the three
    bounds' means less or plus their own 95% CI (with one trial, the means alone): the trials' noise
    and the coefficients' range, combined end to end (DESIGN.md section 4).
    """
    ends = []
    for values in (low, point, high):
        e = estimate(values)
        ci = 0.0 if math.isnan(e.ci95) else e.ci95
        ends += [e.mean - ci, e.mean + ci]
    return Band(min(ends), estimate(point).mean, max(ends))
