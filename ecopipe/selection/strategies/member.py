"""One member alone on every input: the arms every strategy is compared with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ecopipe.selection.members import Member
from ecopipe.selection.runners import Runner, SelectionBatch
from ecopipe.selection.strategies.base import Policy, View

MEMBER_PREFIX = "member_"  # a member alone, as an arm: member_<name>


class MemberRunner(Runner):
    """One member alone on every batch."""

    def __init__(self, members: Sequence[Member], batch_size: int, position: int) -> None:
        self.position = position
        super().__init__(members, batch_size)

    def accept(self, batch: SelectionBatch) -> None:
        self.answer(self.position, batch.x, batch.rows)


class MemberAlone(Policy):
    def __init__(self, position: int) -> None:
        self.position = position

    def runner(self, members: Sequence[Member], batch_size: int, test: Callable[[], View]) -> Runner:
        return MemberRunner(members, batch_size, self.position)

    def right(self, test: View, x_test: np.ndarray) -> np.ndarray:
        return test.correct[self.position]
