"""The router: per-member correctness predictors, so routing has the cascade's accuracy control.

For each member, a logistic regression on the input's pixels predicts the probability that the
member answers it right, fitted on validation A (which no member was fitted on, so the labels are
honest). The M predictors are one linear map, so the router costs one matrix product per call; it
runs on every input inside the measured window and is charged like a member. Routing is a threshold
rule on these probabilities (`cascade.tune` with `charge_reached=False`): each input goes to the
cheapest member whose predicted correctness reaches that member's threshold, tuned on validation B
for the same targets as the cascade, so router and cascade answer the same question.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

CERTAIN_LOGIT = 20.0  # a member right (or wrong) on every validation-A row: predicted so for every input


class Router:
    name = "router"

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
