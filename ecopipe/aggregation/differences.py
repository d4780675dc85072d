"""Differences a reader can trust: each pair of cells that differ in one axis (precision, batch size,
engine, model or hardware) and agree on every other key, the ratio of their energy per 1,000
inferences with a 95% CI from their repeats, and a verdict: lower, higher or not distinguishable.

The interval is Welch's t on the logs of the runs' figures: log a - log b has the difference of the
means, d, and the standard error se = sqrt(s_a²/n_a + s_b²/n_b), with the Welch-Satterthwaite degrees
of freedom; the ratio is exp(d), its interval exp(d ± t·se). Energy is positive and its noise between
runs multiplicative, so a ratio is what a reader quotes ("int8 draws 0.62x fp32's energy"), and its
interval is asymmetric as a ratio's should be. The repeats are a cell's FINISHED runs (seeds, re-runs):
their spread between runs, which one run's CI over its own trials cannot show. A cell with one run
gives no interval: its verdict says that it needs repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ecopipe.aggregation.pivot import sort_rows

AXES = ("precision", "batch_size", "engine", "model", "hardware")
CONFIDENCE = 0.95
LOWER, HIGHER, SAME = "lower", "higher", "not distinguishable"
METHOD = "Welch's t on the logs of the runs' figures"


@dataclass(frozen=True)
class Comparison:
    ratio: float  # a / b: exp of the difference of the mean logs (the ratio of geometric means)
    low: float  # the ends of its 95% interval; NaN without repeats
    high: float
    verdict: str  # of a against b: LOWER, HIGHER, SAME, or why there is none


def needs_repeats(runs_a: int, runs_b: int) -> str:
    return f"needs repeats: {runs_a} and {runs_b} runs, 2 on each side at least (seed=0,1,2)"


NOT_TESTABLE = "not testable: a figure <= 0 has no logarithm"


@dataclass(frozen=True)
class _Cells:
    """Each cell's runs as Welch's t needs them: count, mean and variance of the logs, positive or not."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    positive: np.ndarray


def _verdict(testable: bool, runs_a: int, runs_b: int, low: float, high: float) -> str:
    if not testable:
        return NOT_TESTABLE
    if runs_a < 2 or runs_b < 2:
        return needs_repeats(runs_a, runs_b)
    return LOWER if high < 1 else HIGHER if low > 1 else SAME


def _welch(a: _Cells, b: _Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """a over b, element by element: the ratio, its interval's ends (NaN where there is none) and
    the verdict."""
    testable = a.positive & b.positive
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = np.where(testable, a.mean - b.mean, np.nan)
        share_a, share_b = a.var / a.n, b.var / b.n
        se = np.sqrt(share_a + share_b)
        df = (share_a + share_b) ** 2 / (share_a**2 / (a.n - 1) + share_b**2 / (b.n - 1))
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, np.where(se > 0, df, 1.0))
        half = np.where(se > 0, t * se, 0.0)  # runs that read alike: the interval is the point
        half = np.where((a.n >= 2) & (b.n >= 2), half, np.nan)
        low, high = np.exp(difference - half), np.exp(difference + half)
    verdicts = [
        _verdict(bool(ok), int(na), int(nb), lo, hi)
        for ok, na, nb, lo, hi in zip(testable, a.n, b.n, low, high, strict=True)
    ]
    return np.exp(difference), low, high, verdicts


def _logs(values: pd.Series) -> pd.Series:
    """The logs of the figures; NaN for a figure <= 0, whose cell cannot be compared."""
    return np.log(values.where(values > 0))


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """a's figures against b's, each a cell's runs: the table's arithmetic on two cells."""
    runs = pd.DataFrame({"side": ["a"] * len(a) + ["b"] * len(b), "value": [*a, *b]}, dtype=object)
    cells = _stats(runs.astype({"value": float}), ["side"], "value").set_index("side")
    side = {name: _Cells(*(cells.loc[[name], c].to_numpy() for c in _COLUMNS)) for name in "ab"}
    ratio, low, high, verdicts = _welch(side["a"], side["b"])
    return Comparison(float(ratio[0]), float(low[0]), float(high[0]), verdicts[0])


def _stats(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Per cell (keys): its runs' count, the mean and variance of their logs, and whether all are > 0."""
    logs = _logs(runs[metric])
    frame = runs[keys].assign(value=runs[metric], log=logs, positive=logs.notna())
    return (
        frame.groupby(keys, sort=False)
        .agg(n=("value", "count"), mean=("log", "mean"), var=("log", "var"), positive=("positive", "all"))
        .reset_index()
    )


_COLUMNS = ("n", "mean", "var", "positive")  # _stats' columns, in _Cells' order


def _side(pairs: pd.DataFrame, suffix: str) -> _Cells:
    return _Cells(*(pairs[f"{c}{suffix}"].to_numpy() for c in _COLUMNS))


def differences(finished: pd.DataFrame, dims: list[str], metric: str) -> pd.DataFrame:
    """A row per pair of cells that differ in one axis alone: the axis, the two values (a, b), where
    they agree (the other keys), each side's runs, a / b with its interval, and the verdict."""
    keys = [*dims, "hardware"]
    if metric not in finished:
        return pd.DataFrame()
    runs = finished.dropna(subset=[metric]).astype({k: "str" for k in keys})
    cells = _stats(runs, keys, metric)
    parts = []
    for axis in (a for a in AXES if a in keys):
        others = [k for k in keys if k != axis]
        levels = sort_rows(pd.DataFrame({axis: cells[axis].unique()}), [axis])[axis]
        order = {level: i for i, level in enumerate(levels)}
        pairs = cells.merge(cells, on=others, suffixes=(" a", " b"))
        pairs = pairs[pairs[f"{axis} a"].map(order) < pairs[f"{axis} b"].map(order)]
        if pairs.empty:
            continue
        ratio, low, high, verdicts = _welch(_side(pairs, " a"), _side(pairs, " b"))
        where = [
            ", ".join(f"{k}={v}" for k, v in zip(others, row, strict=True))
            for row in pairs[others].itertuples(index=False)
        ]
        parts.append(
            pd.DataFrame(
                {
                    "axis": axis,
                    "a": pairs[f"{axis} a"].to_numpy(),
                    "b": pairs[f"{axis} b"].to_numpy(),
                    "where": where,
                    "runs a": pairs["n a"].to_numpy(),
                    "runs b": pairs["n b"].to_numpy(),
                    # blank, not NaN, where there is none: the verdict says why
                    "ratio a/b": _blank_nan(ratio),
                    "95% low": _blank_nan(low),
                    "95% high": _blank_nan(high),
                    "a against b": verdicts,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _blank_nan(values: np.ndarray) -> list[float | str]:
    return [float(v) if math.isfinite(v) else "" for v in values]
