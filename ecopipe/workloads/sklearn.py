"""Classical ML: a scikit-learn estimator fitted inside the job, then measured on held-out rows."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import ensemble, linear_model, neural_network, svm, tree
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, r2_score

from ecopipe.config import Config, ConfigError, Engine, Phase, Precision, Task
from ecopipe.hardware import resolve_device
from ecopipe.results import ModelFacts
from ecopipe.workloads.base import Workload
from ecopipe.workloads.tabular import TabularSplit, load_tabular

ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "LogisticRegression": linear_model.LogisticRegression,
    "Ridge": linear_model.Ridge,
    "SVC": svm.SVC,
    "DecisionTreeClassifier": tree.DecisionTreeClassifier,
    "RandomForestClassifier": ensemble.RandomForestClassifier,
    "GradientBoostingClassifier": ensemble.GradientBoostingClassifier,
    "MLPClassifier": neural_network.MLPClassifier,
}


def fitted_values(estimator: Any) -> int:
    """Number of values the fit produced: what the estimator holds to predict (DESIGN.md section 6)."""
    if hasattr(estimator, "estimators_"):  # forests and boosting: every member tree
        members = np.asarray(estimator.estimators_, dtype=object).ravel()
        return sum(fitted_values(member) for member in members)
    if hasattr(estimator, "tree_"):
        return int(estimator.tree_.node_count)
    if hasattr(estimator, "support_vectors_"):
        return int(estimator.support_vectors_.size + estimator.dual_coef_.size + estimator.intercept_.size)
    if hasattr(estimator, "coefs_"):
        return int(sum(w.size for w in estimator.coefs_) + sum(b.size for b in estimator.intercepts_))
    if hasattr(estimator, "coef_"):
        return int(np.size(estimator.coef_) + np.size(estimator.intercept_))
    raise TypeError(f"cannot count the fitted values of {type(estimator).__name__}")


def fitted_dtype(estimator: Any) -> str:
    for name in ("coef_", "coefs_", "support_vectors_"):
        values = getattr(estimator, name, None)
        if values is not None:
            return str(np.asarray(values[0] if isinstance(values, list) else values).dtype)
    if hasattr(estimator, "tree_"):
        return str(estimator.tree_.threshold.dtype)
    if hasattr(estimator, "estimators_"):
        return fitted_dtype(np.asarray(estimator.estimators_, dtype=object).ravel()[0])
    return "unknown"


class SklearnWorkload(Workload):
    device = "cpu"
    fits_in_job = True

    def __init__(self, cfg: Config) -> None:
        model, precision = cfg.model, cfg.precision.name
        if cfg.engine is not Engine.eager:
            raise ConfigError(
                f"engine={cfg.engine.value} applies to text generation, not to model={model.name}."
            )
        resolve_device(cfg.hardware.device, cpu_only=True)
        if model.architecture not in ESTIMATORS:
            raise ConfigError(
                f"model.architecture={model.architecture} is not a supported scikit-learn estimator; "
                f"allowed: {', '.join(ESTIMATORS)}."
            )
        if precision is not Precision.fp32:
            raise ConfigError(
                f"precision={precision.value} cannot run for model={model.name}: scikit-learn estimators "
                "compute in float32/float64 only; use precision=fp32."
            )
        if model.phase is not Phase.generate:
            raise ConfigError(
                f"model.phase={model.phase.value} applies to text generation, not to model={model.name}."
            )
        accepted = ESTIMATORS[model.architecture]().get_params()
        unknown = sorted(set(model.params) - set(accepted))
        if unknown:
            close = {key: difflib.get_close_matches(key, list(accepted), n=1) for key in unknown}
            hints = [f"{key} (did you mean {close[key][0]}?)" if close[key] else key for key in unknown]
            raise ConfigError(
                f"model.params has keys that {model.architecture} does not take: {', '.join(hints)}; "
                f"it takes {', '.join(sorted(accepted))}."
            )
        self.model_cfg, self.dataset_cfg = model, cfg.dataset
        self.batch_size, self.seed = cfg.batch_size, cfg.seed
        self.estimator: Any = None
        self.data: TabularSplit | None = None
        self._batches: list[np.ndarray] = []

    def load(self) -> None:
        self.data = load_tabular(self.dataset_cfg)
        params = dict(self.model_cfg.params)
        estimator_cls = ESTIMATORS[self.model_cfg.architecture]
        if "random_state" in estimator_cls().get_params():
            params.setdefault("random_state", self.seed)
        self.estimator = estimator_cls(**params)
        n_batches = max(1, -(-len(self.data.x_test) // self.batch_size))
        self._batches = np.array_split(self.data.x_test, n_batches)

    def fit(self) -> bool:
        assert self.data is not None
        self.estimator.fit(self.data.x_train, self.data.y_train)
        return True

    def batches(self) -> Sequence[np.ndarray]:
        return self._batches

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.estimator.predict(batch)

    def quality(self, outputs: Sequence[np.ndarray]) -> dict[str, float]:
        assert self.data is not None
        predicted = np.concatenate(list(outputs))
        truth = self.data.y_test[: len(predicted)]
        if self.model_cfg.task is Task.tabular_regression:
            return {"r2": float(r2_score(truth, predicted))}
        return {"accuracy": float(accuracy_score(truth, predicted))}

    def facts(self) -> ModelFacts:
        count = fitted_values(self.estimator)
        return ModelFacts(count, float(count), fitted_dtype(self.estimator), "fitted")
