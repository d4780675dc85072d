"""Each pool's data: splits disjoint, stratified and seeded; the hub data set read offline."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from ecopipe.config import ConfigError
from ecopipe.selection import benchmark
from ecopipe.selection.data import load_pool_data, split_indices
from ecopipe.selection.workload import build_selection_workload
from tests.selection.conftest import QUICK, compose_cfg


def test_digits_splits_are_disjoint_stratified_seeded_and_cover_every_row():
    data = load_pool_data(compose_cfg("pool=digits_5", base=QUICK).pool, seed=0)
    parts = data.splits.as_dict()
    rows = np.concatenate(list(parts.values()))
    assert len(rows) == len(set(rows.tolist())) == len(data.y)
    overall = np.bincount(data.y) / len(data.y)
    for name, part in parts.items():
        share = np.bincount(data.y[part], minlength=data.classes) / len(part)
        assert np.abs(share - overall).max() < 0.02, name
    assert len(parts["test"]) == math.ceil(0.25 * len(data.y))
    again = split_indices(data.y, 0.15, 0.15, 0.25, seed=0).as_dict()
    other = split_indices(data.y, 0.15, 0.15, 0.25, seed=1).as_dict()
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_digits_hard_is_seeded_graded_and_split_by_source_digit():
    first, again, other = benchmark.generate(400, 0), benchmark.generate(400, 0), benchmark.generate(400, 1)
    assert np.array_equal(first.x, again.x) and not np.array_equal(first.x, other.x)
    assert first.x.dtype == np.float32 and first.x.min() >= 0 and first.x.max() <= 1
    assert len(np.unique(first.severity)) == benchmark.SEVERITY_LEVELS
    # Severity 0 is the bundled digit itself; severer rows move further from it.
    bundled = benchmark.datasets.load_digits().data / 16.0
    distance = np.abs(first.x - bundled[first.source]).mean(axis=1)
    assert distance[first.severity == 0].max() < 1e-6
    means = [distance[first.severity == s].mean() for s in np.unique(first.severity)]
    assert means == sorted(means)
    assert np.array_equal(first.y, benchmark.source_labels()[first.source])
    # The default pool generates at least 20,000 rows; no source digit lands in two splits.
    cfg = compose_cfg("pool=digits_hard", base=QUICK)
    assert cfg.pool.max_samples is None and benchmark.ROWS >= 20_000
    data = load_pool_data(compose_cfg().pool, seed=0)
    generated = benchmark.generate(3000, 0)
    sources = [set(generated.source[part].tolist()) for part in data.splits.as_dict().values()]
    for a, b in pairwise(sources):
        assert not a & b
    assert sum(len(p) for p in data.splits.as_dict().values()) == 3000


def test_fashion_mnist_loads_a_local_hub_format_data_set(tmp_path, monkeypatch):
    """The real `datasets` path on a local parquet data set in the hub's layout and features, offline."""
    import datasets
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(10)])}
    )
    pixels = {}
    for split, rows in (("train", 60), ("test", 20)):
        arrays = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        labels = np.arange(rows) % 10
        pixels[split] = (arrays, labels)
        part = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in arrays], "label": labels.tolist()}, features=features
        )
        (tmp_path / "data").mkdir(exist_ok=True)
        part.to_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    cfg = compose_cfg("pool=fashion_mnist_5", f"pool.hf_id={tmp_path}", base=QUICK)
    data = load_pool_data(cfg.pool, seed=0)
    assert data.x.shape == (80, 784) and data.image_shape == (1, 28, 28)
    expected = np.concatenate([pixels["train"][0], pixels["test"][0]]).reshape(80, -1) / 255.0
    order = np.lexsort(expected.T[::-1])
    assert np.allclose(data.x[np.lexsort(data.x.T[::-1])], expected[order], atol=1e-6)
    assert np.bincount(data.y).tolist() == [8] * 10


def test_fashion_mnist_offline_suggests_an_offline_pool(tmp_path, monkeypatch):
    """The real `datasets` call, offline (conftest) with empty caches: its own error, wrapped in ours."""
    import datasets
    import huggingface_hub

    # Empty caches, so a data set cached on a developer's machine cannot answer.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert datasets.config.HF_HUB_OFFLINE
    workload = build_selection_workload(compose_cfg("pool=fashion_mnist_5", "strategy=cascade", base=QUICK))
    with pytest.raises(ConfigError) as refused:
        workload.load()
    message = str(refused.value)
    assert message.startswith("pool=fashion_mnist_5 needs Fashion-MNIST") and "use pool=digits_5" in message
    # Both hub ids were tried, each refused by `datasets` itself for being offline.
    for name in ("zalando-datasets/fashion_mnist", "fashion_mnist"):
        refusal = f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)"
        assert f"{name}: ConnectionError: {refusal}" in message
