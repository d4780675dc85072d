"""Running a strategy over the batches of a pass, queueing the rows it passes on.

A runner answers the test split batch by batch. Rows a cascade escalates (or a router sends to a
member) wait in that member's queue until it holds a full batch, so deeper members run full batches,
as priced (`costs.Prices.pass_j`); at the end of a pass every queue is flushed, cheapest member
first. A batch's answers may therefore come back with a later batch: each output carries its rows'
positions in the test split, and batch latencies mix rows of several batches.

Every call of a member (and of a strategy's own scorer, such as the router) is counted, so the
per-member accounting of the pass (`accounting`) charges exactly what ran. Each strategy's runner
lives in its module (`strategies/`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecopipe.selection.costs import Accounting, MemberCost
from ecopipe.selection.members import Member


@dataclass(frozen=True)
class SelectionBatch:
    x: np.ndarray
    rows: np.ndarray  # positions in the test split

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Answers:
    rows: np.ndarray  # positions in the test split
    labels: np.ndarray  # predicted class
    chosen: np.ndarray  # position of the member that answered


def concatenate(answers: Sequence[Answers]) -> Answers:
    """One pass's answers, in test-split order."""
    rows = np.concatenate([a.rows for a in answers])
    order = np.argsort(rows, kind="stable")
    return Answers(
        rows[order],
        np.concatenate([a.labels for a in answers])[order],
        np.concatenate([a.chosen for a in answers])[order],
    )


class Runner(ABC):
    def __init__(self, members: Sequence[Member], batch_size: int) -> None:
        self.members, self.batch_size = list(members), batch_size
        self.start()

    def start(self) -> None:
        """A pass begins: empty queues, zero counters."""
        count = len(self.members)
        self.queues: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(count)]
        self.evaluated = np.zeros(count, dtype=np.int64)
        self.calls = np.zeros(count, dtype=np.int64)
        self.rows = 0
        self.scorer_rows = self.scorer_calls = 0  # a strategy's own scorer (the router's predictors)
        self._out: list[Answers] = []

    def feed(self, batch: SelectionBatch, last: bool) -> Answers:
        """Answers that are ready after this batch (all remaining ones when it is the pass's last)."""
        self._out = []
        self.rows += len(batch)
        self.accept(batch)
        self._drain(flush=last)
        if not self._out:
            empty = np.empty(0, dtype=np.int64)
            return Answers(empty, empty, empty)
        return concatenate(self._out)

    @abstractmethod
    def accept(self, batch: SelectionBatch) -> None:
        """Run what this batch needs now; queue the rest with `enqueue`."""

    def answer(self, m: int, x: np.ndarray, rows: np.ndarray) -> None:
        """Member m answers these rows (router, oracle and member-alone runners)."""
        self._emit(rows, self.run(m, x).argmax(axis=1), m)

    def run(self, m: int, x: np.ndarray) -> np.ndarray:
        self.evaluated[m] += len(x)
        self.calls[m] += 1
        return self.members[m].proba(x)

    def enqueue(self, m: int, x: np.ndarray, rows: np.ndarray) -> None:
        if len(rows):
            self.queues[m].append((x, rows))

    def _emit(self, rows: np.ndarray, labels: np.ndarray, m: int) -> None:
        self._out.append(Answers(rows, labels.astype(np.int64), np.full(len(rows), m, dtype=np.int64)))

    def _drain(self, flush: bool) -> None:
        for m, queue in enumerate(self.queues):  # escalations only go deeper: one ordered sweep drains all
            while queue:
                queued = sum(len(rows) for _, rows in queue)
                if queued < self.batch_size and not flush:
                    break
                x = np.concatenate([chunk for chunk, _ in queue])
                rows = np.concatenate([r for _, r in queue])
                take = min(self.batch_size, queued)
                queue[:] = [(x[take:], rows[take:])] if take < queued else []
                self.answer(m, x[:take], rows[:take])

    def accounting(self, costs: dict[str, MemberCost], scorer: MemberCost | None = None) -> Accounting:
        """The last pass: each member's (and the scorer's) fitted cost x the calls and rows it ran."""
        names = [m.name for m in self.members]
        evaluated = dict(zip(names, self.evaluated.tolist(), strict=True))
        calls = dict(zip(names, self.calls.tolist(), strict=True))
        charged = dict(costs)
        if scorer is not None:
            evaluated[scorer.name], calls[scorer.name] = self.scorer_rows, self.scorer_calls
            charged[scorer.name] = scorer
        return Accounting(self.rows, evaluated, calls, charged)
