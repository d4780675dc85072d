"""The oracle: each input goes to the cheapest member right on it, known in hindsight.

The lower bound on energy at the best achievable accuracy, not a deployable strategy: it alone reads
the test labels (`oracle.cheapest_right` on every member's test outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ecopipe.selection.members import Member
from ecopipe.selection.oracle import cheapest_right
from ecopipe.selection.runners import Runner, SelectionBatch
from ecopipe.selection.strategies.base import Goal, Policy, Strategy, View


class OracleRunner(Runner):
    """Each row queues for the member chosen for it in hindsight."""

    def __init__(self, members: Sequence[Member], batch_size: int, choice: np.ndarray) -> None:
        self.choice = choice
        super().__init__(members, batch_size)

    def accept(self, batch: SelectionBatch) -> None:
        choice = self.choice[batch.rows]
        for m in np.unique(choice):
            self.enqueue(int(m), batch.x[choice == m], batch.rows[choice == m])


class OraclePolicy(Policy):
    def __init__(self, per_sample: np.ndarray) -> None:
        self.per_sample = per_sample  # each member's price per input: what "cheapest" means

    def runner(self, members: Sequence[Member], batch_size: int, test: Callable[[], View]) -> Runner:
        return OracleRunner(members, batch_size, cheapest_right(test().correct, self.per_sample))

    def right(self, test: View, x_test: np.ndarray) -> np.ndarray:
        choice = cheapest_right(test.correct, self.per_sample)
        return test.correct[choice, np.arange(test.correct.shape[1])]


class Oracle(Strategy):
    name = "oracle"
    rank = 90  # a bound, reported after the strategies it bounds

    def fit(self, goal: Goal, arm: str) -> Policy:
        return OraclePolicy(self.validation.prices.per_sample)
