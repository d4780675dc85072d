"""scikit-learn's bundled tabular data sets, split with a seed so every job sees the same rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

from ecopipe.config import ConfigError, DataKind, DatasetConfig

LOADERS = {
    "digits": datasets.load_digits,
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "diabetes": datasets.load_diabetes,
}


@dataclass(frozen=True)
class TabularSplit:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_tabular(cfg: DatasetConfig) -> TabularSplit:
    if cfg.name not in LOADERS:
        raise ConfigError(
            f"dataset={cfg.name} is not a scikit-learn bundled data set; allowed: {', '.join(LOADERS)}."
        )
    x, y = LOADERS[cfg.name](return_X_y=True)
    stratify = y if cfg.kind is DataKind.tabular_classification else None
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify
    )
    if cfg.limit is not None:
        x_test, y_test = x_test[: cfg.limit], y_test[: cfg.limit]
    return TabularSplit(x_train, y_train, x_test, y_test)
