"""Strategies that are threshold rules over the members, tuned on validation B (`thresholds.tune`)."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import ClassVar

import numpy as np

from ecopipe.selection.costs import Prices
from ecopipe.selection.strategies.base import Goal, Policy, Strategy
from ecopipe.selection.thresholds import Tuned, tune

log = logging.getLogger(__name__)


class ThresholdStrategy(Strategy):
    """Each input stops at the first member whose score reaches that member's threshold."""

    tuned = True
    charge_reached: ClassVar[bool]  # every member up to the stopping one ran (cascade), or only it

    @abstractmethod
    def scores_b(self) -> np.ndarray:
        """(members x rows) the scores the rule reads, on validation B."""

    @abstractmethod
    def prices(self) -> Prices:
        """What a pass costs, as this strategy pays it."""

    @abstractmethod
    def policy(self, tuned: Tuned) -> Policy:
        """The frozen rule."""

    def fit(self, goal: Goal, arm: str) -> Policy:
        validation = self.validation
        correct = validation.view_b.correct
        tuned = tune(
            self.scores_b(),
            correct,
            self.prices(),
            goal.target,
            goal.tolerance or 0.0,
            None if goal.budget_j_per_1k is None else goal.budget_j_per_1k / 1000,
            goal.grid,
            charge_reached=self.charge_reached,
            reference=validation.reference,
        )
        if not tuned.feasible:
            log.warning(
                "%s: target %s cannot be met on validation B (budget %s J per 1,000 below the cheapest "
                "member's?): the closest thresholds are used",
                arm,
                goal.target.value,
                goal.budget_j_per_1k,
            )
        log.info(
            "%s thresholds %s: validation B accuracy %.4f (reference %.4f), %.4g J per 1,000 priced",
            arm,
            np.round(tuned.thresholds, 4).tolist(),
            tuned.point.accuracy,
            float(correct[validation.reference].mean()),
            1000 * tuned.point.energy_j_per_sample,
        )
        return self.policy(tuned)
