"""The router: per-member correctness predictors, so routing has the cascade's accuracy control.

For each member, a logistic regression on the input's pixels predicts the probability that the
member answers it right, fitted on validation A (which no member was fitted on, so the labels are
honest). The M predictors are one linear map, so the router costs one matrix product per call; it
runs on every input inside the measured window and is charged like a member. Routing is a threshold
rule on these probabilities (`thresholds.tune` with `charge_reached=False`): each input goes to the
cheapest member whose predicted correctness reaches that member's threshold, tuned on validation B
for the same targets as the cascade, so router and cascade answer the same question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from ecopipe.selection.costs import MemberCost, Prices
from ecopipe.selection.members import Member
from ecopipe.selection.runners import Runner, SelectionBatch
from ecopipe.selection.strategies.base import Policy, Validation, View
from ecopipe.selection.strategies.tuned import ThresholdStrategy
from ecopipe.selection.thresholds import Tuned, stop_index

CERTAIN_LOGIT = 20.0  # a member right (or wrong) on every validation-A row: predicted so for every input


class Predictors:
    """The router's scorer: one logistic regression per member, stacked into one linear map."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.weights: np.ndarray | None = None  # (features, members)
        self.bias: np.ndarray | None = None  # (members,)

    def fit(self, x: np.ndarray, correct: np.ndarray) -> None:
        """`correct`: (members x rows) whether each member was right on each validation-A row."""
        weights = np.zeros((x.shape[1], len(correct)))
        bias = np.zeros(len(correct))
        for m, right in enumerate(correct):
            if right.all() or not right.any():
                bias[m] = CERTAIN_LOGIT if right.all() else -CERTAIN_LOGIT
                continue
            model = LogisticRegression(max_iter=1000, random_state=self.seed).fit(x, right)
            weights[:, m], bias[m] = model.coef_[0], model.intercept_[0]
        self.weights, self.bias = weights, bias

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(members x rows) predicted probability that each member is right on each input."""
        assert self.weights is not None and self.bias is not None
        return expit(x @ self.weights + self.bias).T

    @property
    def parameters(self) -> int:
        return 0 if self.weights is None or self.bias is None else int(self.weights.size + self.bias.size)


class RouterRunner(Runner):
    """The router scores each batch; each row queues for the member its thresholds pick."""

    def __init__(
        self, members: Sequence[Member], batch_size: int, predictors: Predictors, thresholds: np.ndarray
    ) -> None:
        self.predictors, self.thresholds = predictors, thresholds
        super().__init__(members, batch_size)

    def accept(self, batch: SelectionBatch) -> None:
        self.scorer_rows += len(batch)
        self.scorer_calls += 1
        choice = stop_index(self.predictors.scores(batch.x), self.thresholds)
        for m in np.unique(choice):
            self.enqueue(int(m), batch.x[choice == m], batch.rows[choice == m])


class RouterPolicy(Policy):
    def __init__(self, tuned: Tuned, predictors: Predictors, cost: MemberCost) -> None:
        self.tuned, self.predictors, self.overhead = tuned, predictors, cost
        self.overhead_parameters = predictors.parameters

    def runner(self, members: Sequence[Member], batch_size: int, test: Callable[[], View]) -> Runner:
        return RouterRunner(members, batch_size, self.predictors, self.tuned.thresholds)

    def right(self, test: View, x_test: np.ndarray) -> np.ndarray:
        choice = stop_index(self.predictors.scores(x_test), self.tuned.thresholds)
        return test.correct[choice, np.arange(test.correct.shape[1])]


class Router(ThresholdStrategy):
    name = "router"
    rank = 20
    charge_reached = False

    def __init__(self, validation: Validation) -> None:
        super().__init__(validation)
        self.predictors = Predictors(validation.seed)
        self.predictors.fit(validation.x_a, validation.view_a.correct)
        self.cost = validation.price("router", self.predictors.scores)
        self.parameters = self.predictors.parameters
        self._scores_b = self.predictors.scores(validation.x_b)

    def scores_b(self) -> np.ndarray:
        return self._scores_b

    def prices(self) -> Prices:
        v = self.validation
        return Prices(v.prices.per_call, v.prices.per_row, v.batch_size, self.cost)

    def policy(self, tuned: Tuned) -> Policy:
        return RouterPolicy(tuned, self.predictors, self.cost)
