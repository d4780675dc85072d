"""The router: a light classifier on the input that names the member to run.

It is a multinomial logistic regression on the flat pixels, trained on validation A with the oracle
labels of `oracle.cheapest_right` (members never saw validation A, so the labels are honest), and
scored on the test split only. It runs inside the measured window on every input, so its own cost is
measured and charged like a member's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from ecopipe.workloads.sklearn import fitted_values


class Router:
    name = "router"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.model: Any = None
        self.constant: int | None = None  # every validation-A label was the same member

    def fit(self, x: np.ndarray, labels: np.ndarray) -> None:
        seen = np.unique(labels)
        if len(seen) == 1:
            self.constant = int(seen[0])
            return
        self.model = LogisticRegression(max_iter=1000, random_state=self.seed).fit(x, labels)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.constant is not None:
            return np.full(len(x), self.constant, dtype=np.int64)
        return self.model.predict(x).astype(np.int64)

    @property
    def parameters(self) -> int:
        return 0 if self.model is None else fitted_values(self.model)
