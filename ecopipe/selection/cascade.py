"""Confidence cascades: run members cheapest first, stop at the first confident enough.

Thresholds are a vector over the ordered members; the last is always 0 (it answers whatever reaches
it). A threshold of +inf means the member is skipped: it could never stop an input, so running it
would only cost energy. Row-wise semantics on precomputed (members x rows) confidence and
correctness matrices make one evaluation O(members x rows), which the search relies on.

Search (on validation B only). The full grid has (G + 1)^(M - 1) vectors (21 quantile thresholds
plus "skip" for each of four free members: 22^4 = 234,256), too many for Fashion-MNIST's validation
rows. Instead: multi-start coordinate descent. Each start is one threshold shared by every member but
the last (G + 1 starts, the Pareto curve's grid) or "always the heaviest"; from each, every member's
threshold in turn is moved over its own grid (its confidence quantiles, plus skip), keeping a change
only when it improves the target, until a sweep changes nothing (at most MAX_SWEEPS). That is a few
thousand O(members x rows) evaluations (under a second on 10,500 rows). Against exhaustive search on
small synthetic pools it found the optimum in 59 of 60 cases and came within 4% otherwise.
The objective is lexicographic: feasibility first (accuracy within tolerance of the heaviest member /
energy within budget), then energy (parity) or accuracy (budget), then the other as a tie-break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ecopipe.config import CascadeTarget

MAX_SWEEPS = 10


@dataclass(frozen=True)
class Point:
    """A strategy's outcome on a set of rows, with the per-member accounting model of its energy."""

    accuracy: float
    energy_j_per_sample: float  # sum over members of cost x share of rows each evaluated
    evaluated: np.ndarray  # (members,) rows each member ran on
    stopped: np.ndarray  # (members,) rows each member answered


def stop_index(conf: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each row (column of `conf`), the first member whose confidence reaches its threshold."""
    stops = conf >= thresholds[:, None]
    stops[-1] = True
    return stops.argmax(axis=0)


def evaluated_counts(stop: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Rows each member ran on: every row that reached it, unless it is skipped (+inf)."""
    members = len(thresholds)
    stopped = np.bincount(stop, minlength=members)
    reached = len(stop) - np.concatenate([[0], np.cumsum(stopped)[:-1]])
    active = np.isfinite(thresholds)
    active[-1] = True
    return np.where(active, reached, 0)


def evaluate(thresholds: np.ndarray, conf: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> Point:
    stop = stop_index(conf, thresholds)
    evaluated = evaluated_counts(stop, thresholds)
    rows = conf.shape[1]
    accuracy = float(correct[stop, np.arange(rows)].mean())
    stopped = np.bincount(stop, minlength=len(costs))
    return Point(accuracy, float(evaluated @ costs) / rows, evaluated, stopped)


def normalise(thresholds: Sequence[float]) -> np.ndarray:
    values = np.asarray(thresholds, dtype=np.float64).copy()
    values[-1] = 0.0
    return values


def member_grid(conf: np.ndarray, size: int) -> np.ndarray:
    """`size` thresholds at the quantiles of the given confidences, plus +inf (skip)."""
    if not conf.size:
        return np.array([np.inf])
    return np.append(np.unique(np.quantile(conf, np.linspace(0.0, 1.0, size))), np.inf)


def shared_grid(conf: np.ndarray, size: int) -> np.ndarray:
    """One grid for a threshold shared by every member but the last (the Pareto curve's grid)."""
    return member_grid(conf[:-1].ravel(), size)


def objective(
    target: CascadeTarget, accuracy_floor: float, budget_j_per_sample: float | None
) -> Callable[[Point], tuple[float, ...]]:
    """A sort key: smaller is better."""
    if target is CascadeTarget.accuracy_parity:

        def key(p: Point) -> tuple[float, ...]:
            if p.accuracy >= accuracy_floor - 1e-12:
                return (0.0, p.energy_j_per_sample, -p.accuracy)
            return (1.0, -p.accuracy, p.energy_j_per_sample)

        return key
    assert budget_j_per_sample is not None

    def key_budget(p: Point) -> tuple[float, ...]:
        if p.energy_j_per_sample <= budget_j_per_sample * (1 + 1e-12):
            return (0.0, -p.accuracy, p.energy_j_per_sample)
        return (1.0, p.energy_j_per_sample, -p.accuracy)

    return key_budget


@dataclass(frozen=True)
class Tuned:
    thresholds: np.ndarray
    point: Point  # on validation B
    heaviest: Point  # always the heaviest member, on validation B
    evaluations: int
    feasible: bool


def tune(
    conf: np.ndarray,
    correct: np.ndarray,
    costs: np.ndarray,
    target: CascadeTarget,
    tolerance: float,
    budget_j_per_sample: float | None,
    grid_size: int,
) -> Tuned:
    members = conf.shape[0]
    heaviest_thresholds = normalise([np.inf] * members)
    heaviest = evaluate(heaviest_thresholds, conf, correct, costs)
    key = objective(target, heaviest.accuracy - tolerance, budget_j_per_sample)
    evaluations = 0

    def score(thresholds: np.ndarray) -> tuple[tuple[float, ...], Point]:
        nonlocal evaluations
        evaluations += 1
        point = evaluate(thresholds, conf, correct, costs)
        return key(point), point

    shared = [normalise([t] * members) for t in shared_grid(conf, grid_size)]
    grids = [member_grid(conf[m], grid_size) for m in range(members - 1)]
    best: tuple[tuple[float, ...], Point, np.ndarray] | None = None
    for start in [*shared, heaviest_thresholds]:
        current = start.copy()
        current_key, current_point = score(current)
        for _ in range(MAX_SWEEPS):
            changed = False
            for m in range(members - 1):
                for value in grids[m]:
                    if value == current[m]:
                        continue
                    trial = current.copy()
                    trial[m] = value
                    trial_key, trial_point = score(trial)
                    if trial_key < current_key:
                        current, current_key, current_point, changed = trial, trial_key, trial_point, True
            if not changed:
                break
        if best is None or current_key < best[0]:
            best = (current_key, current_point, current)
    assert best is not None
    return Tuned(best[2], best[1], heaviest, evaluations, best[0][0] == 0.0)


def run_cascade(
    probas: Sequence[Callable[[np.ndarray], np.ndarray]], thresholds: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a cascade on a batch: member 1 on all rows, the unconfident ones on to member 2, ...

    Returns (predicted class, member that answered, rows each member evaluated).
    """
    rows = len(x)
    labels = np.empty(rows, dtype=np.int64)
    stop = np.empty(rows, dtype=np.int64)
    evaluated = np.zeros(len(probas), dtype=np.int64)
    pending = np.arange(rows)
    last = len(probas) - 1
    for m, (proba, threshold) in enumerate(zip(probas, thresholds, strict=True)):
        if m < last and not np.isfinite(threshold):
            continue
        p = proba(x if len(pending) == rows else x[pending])  # no copy while every row is pending
        evaluated[m] = len(pending)
        done = np.ones(len(pending), dtype=bool) if m == last else p.max(axis=1) >= threshold
        if done.all():
            labels[pending] = p.argmax(axis=1)
            stop[pending] = m
            break
        answered = pending[done]
        labels[answered] = p[done].argmax(axis=1)
        stop[answered] = m
        pending = pending[~done]
    return labels, stop, evaluated
