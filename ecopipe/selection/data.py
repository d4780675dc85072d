"""The pool's data and its four seeded, stratified, disjoint splits.

- train: fits the members;
- validation A: fits the router and each member's temperature;
- validation B: tunes the cascade thresholds;
- test: measured and reported once; no fitting or tuning step reads it.

Every row is a flat vector of pixels scaled to [0, 1]; `image_shape` tells the CNN how to fold it.
Fashion-MNIST's official train and test parts are pooled and re-split like digits, so every pool gets
the same four-way protocol from one seed. digits_hard (`benchmark`) is split by source digit. Every
read of a split is counted (`PoolData.reads`): a job reads the test split once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

from ecopipe.config import ConfigError, PoolConfig
from ecopipe.selection import benchmark

log = logging.getLogger(__name__)

SPLITS = ("train", "validation_a", "validation_b", "test")
FASHION_IDS = ("zalando-datasets/fashion_mnist", "fashion_mnist")


@dataclass(frozen=True)
class Splits:
    """Row indices into the pool's data, one array per split."""

    train: np.ndarray
    validation_a: np.ndarray
    validation_b: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in SPLITS}


@dataclass(frozen=True)
class PoolData:
    x: np.ndarray  # (rows, pixels) float32 in [0, 1]
    y: np.ndarray  # int64 class ids 0..classes-1
    image_shape: tuple[int, int, int]  # channels, height, width
    splits: Splits
    reads: Counter[str] = field(default_factory=Counter, compare=False)  # split -> times read

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = getattr(self.splits, split)
        self.reads[split] += 1
        return self.x[rows], self.y[rows]


def split_indices(y: np.ndarray, validation_a: float, validation_b: float, test: float, seed: int) -> Splits:
    """Four stratified, disjoint index sets covering every row; the same seed gives the same rows."""
    rows = np.arange(len(y))
    rest, test_rows = train_test_split(rows, test_size=test, random_state=seed, stratify=y)
    rest, b_rows = train_test_split(
        rest, test_size=validation_b / (1 - test), random_state=seed + 1, stratify=y[rest]
    )
    train_rows, a_rows = train_test_split(
        rest, test_size=validation_a / (1 - test - validation_b), random_state=seed + 2, stratify=y[rest]
    )
    return Splits(*(np.sort(r) for r in (train_rows, a_rows, b_rows, test_rows)))


def split_by_group(
    groups: np.ndarray,
    group_labels: np.ndarray,
    validation_a: float,
    validation_b: float,
    test: float,
    seed: int,
) -> Splits:
    """Four disjoint row sets, each holding every row of the groups (source digits) drawn for it;
    groups are split stratified by their class."""
    by_group = split_indices(group_labels, validation_a, validation_b, test, seed)
    return Splits(*(np.flatnonzero(np.isin(groups, part)) for part in by_group.as_dict().values()))


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    x, y = datasets.load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64), (1, 8, 8)


def _fashion_mnist(hf_id: str | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    from datasets import load_dataset

    errors: list[str] = []
    for name in dict.fromkeys([hf_id or FASHION_IDS[0], *FASHION_IDS]):
        try:
            parts = load_dataset(name)
        except Exception as error:  # offline, not cached, renamed: try the next id, then explain
            errors.append(f"{name}: {type(error).__name__}: {error}")
            continue
        images, labels = [], []
        for part in parts.values():
            images.extend(np.asarray(image, dtype=np.uint8) for image in part["image"])
            labels.extend(part["label"])
        x = np.stack(images).reshape(len(images), -1).astype(np.float32) / 255.0
        return x, np.asarray(labels, dtype=np.int64), (1, 28, 28)
    raise ConfigError(
        "pool=fashion_mnist_5 needs Fashion-MNIST from Hugging Face `datasets`, which could not be loaded "
        "(offline, or not in the local cache): " + "; ".join(errors) + ". Run once online to cache it, "
        "or use pool=digits_5, which runs offline on scikit-learn's bundled digits."
    )


def _fractions(pool: PoolConfig) -> tuple[float, float, float]:
    return pool.validation_a_fraction, pool.validation_b_fraction, pool.test_fraction


def _digits_hard(pool: PoolConfig, seed: int) -> PoolData:
    generated = benchmark.generate(pool.max_samples or benchmark.ROWS, seed)
    splits = split_by_group(generated.source, benchmark.source_labels(), *_fractions(pool), seed)
    return PoolData(generated.x, generated.y, (1, benchmark.SIDE, benchmark.SIDE), splits)


POOL_DATASETS = ("digits", "digits_hard", "fashion_mnist")


def load_pool_data(pool: PoolConfig, seed: int) -> PoolData:
    if pool.dataset == "digits_hard":
        data = _digits_hard(pool, seed)
        log.info("pool data digits_hard: %s generated rows, splits %s", len(data.y), _sizes(data.splits))
        return data
    if pool.dataset == "digits":
        x, y, shape = _digits()
    elif pool.dataset == "fashion_mnist":
        x, y, shape = _fashion_mnist(pool.hf_id)
    else:
        raise ConfigError(f"pool.dataset={pool.dataset} is unknown; allowed: {', '.join(POOL_DATASETS)}.")
    if pool.max_samples is not None and pool.max_samples < len(y):
        keep, _ = train_test_split(
            np.arange(len(y)), train_size=pool.max_samples, random_state=seed, stratify=y
        )
        keep = np.sort(keep)
        x, y = x[keep], y[keep]
    splits = split_indices(y, *_fractions(pool), seed)
    log.info("pool data %s: %s rows, splits %s", pool.dataset, len(y), _sizes(splits))
    return PoolData(x, y, shape, splits)


def _sizes(splits: Splits) -> dict[str, int]:
    return {k: len(v) for k, v in splits.as_dict().items()}
