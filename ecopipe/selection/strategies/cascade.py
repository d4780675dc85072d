"""The cascade: members run cheapest first; an input stops at the first one confident enough.

Its scores are each member's own calibrated confidence, so every member up to the stopping one ran
and is charged. Rows a member passes on queue until the next active member has a full batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ecopipe.selection.costs import Prices
from ecopipe.selection.members import Member
from ecopipe.selection.runners import Runner, SelectionBatch
from ecopipe.selection.strategies.base import Policy, View
from ecopipe.selection.strategies.tuned import ThresholdStrategy
from ecopipe.selection.thresholds import Tuned, stop_index


class CascadeRunner(Runner):
    """The first active member runs each batch; unconfident rows queue for the next active member."""

    def __init__(self, members: Sequence[Member], batch_size: int, thresholds: np.ndarray) -> None:
        self.thresholds = thresholds
        last = len(thresholds) - 1
        self.active = [m for m, t in enumerate(thresholds) if np.isfinite(t) or m == last]
        super().__init__(members, batch_size)

    def accept(self, batch: SelectionBatch) -> None:
        self.answer(self.active[0], batch.x, batch.rows)

    def answer(self, m: int, x: np.ndarray, rows: np.ndarray) -> None:
        p = self.run(m, x)
        done = p.max(axis=1) >= self.thresholds[m]
        if m == self.active[-1]:
            done[:] = True
        self._emit(rows[done], p[done].argmax(axis=1), m)
        if not done.all():
            self.enqueue(self.active[self.active.index(m) + 1], x[~done], rows[~done])


class CascadePolicy(Policy):
    def __init__(self, tuned: Tuned) -> None:
        self.tuned = tuned

    def runner(self, members: Sequence[Member], batch_size: int, test: Callable[[], View]) -> Runner:
        return CascadeRunner(members, batch_size, self.tuned.thresholds)

    def right(self, test: View, x_test: np.ndarray) -> np.ndarray:
        return test.correct[stop_index(test.conf, self.tuned.thresholds), np.arange(test.correct.shape[1])]


class Cascade(ThresholdStrategy):
    name = "cascade"
    rank = 10
    charge_reached = True

    def scores_b(self) -> np.ndarray:
        return self.validation.view_b.conf

    def prices(self) -> Prices:
        return self.validation.prices

    def policy(self, tuned: Tuned) -> Policy:
        return CascadePolicy(tuned)
