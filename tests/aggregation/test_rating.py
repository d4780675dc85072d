"""Stars by the AI Energy Score's rule: equal-width bins and their edges, text generation's size classes,
and `python -m ecopipe.aggregate --rating` over a store, within its range or a reference file's."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.image import imread

from ecopipe.aggregation.rating import NO_GPU, size_class, stars
from ecopipe.names import Metric
from tests.aggregation.conftest import CPU_SOURCES, EXPERIMENT, H100, T4, aggregate_cli, figures


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 5),  # the lowest: 5 stars
        (0.999, 5),
        (1.0, 4),  # an edge between two bins: the bin above it, the fewer stars
        (2.5, 3),
        (4.0, 1),
        (4.999, 1),
        (5.0, 1),  # the highest: 1 star (the last bin is closed)
        (-1.0, 5),  # outside a published range: the nearest end's stars
        (7.0, 1),
    ],
)
def test_five_bins_of_equal_width_over_the_range(value, expected):
    assert stars(value, 0.0, 5.0) == expected


def test_a_range_without_width_rates_nothing():
    assert stars(2.0, 2.0, 2.0) is None


def test_text_generation_is_rated_within_its_size_class():
    assert [size_class("text_generation", p) for p in (1e9, 20e9, 20e9 + 1, 66e9, 70e9)] == list("AABBC")
    assert size_class("image_classification", 70e9) == ""


def _rated(runs, client, model: str, wh: float | None, hardware: str = H100, **kw) -> str:
    metrics = figures(100.0) | {Metric.PARAMETERS: 1e9}
    if wh is not None:
        metrics[Metric.GPU_WH_PER_1K] = wh
    run_id = runs.job(model, hardware=hardware, metrics=metrics, **kw)
    client.log_param(run_id, "model.task", "text_generation")
    return run_id


def test_the_aggregation_rates_each_run_within_the_store_or_a_reference(runs, client, store, tmp_path):
    for model, wh in (("gpt2", 1.0), ("opt-125m", 3.0), ("phi-2", 6.0)):
        _rated(runs, client, model, wh)
    _rated(runs, client, "llama-3.2-1b", 2.0, hardware=T4)
    _rated(runs, client, "qwen2.5-0.5b", None, sources=CPU_SOURCES)  # no GPU: not rated
    args = ["--experiment", EXPERIMENT, "--tracking-uri", store]
    done = aggregate_cli(*args, "--rating", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rated = pd.read_csv(tmp_path / "out" / "tables" / "rating.csv").set_index("model")
    # The store's range for text generation, class A: 1 to 6 Wh, bins 1 Wh wide.
    assert rated.loc[["gpt2", "opt-125m", "phi-2", "llama-3.2-1b"], "stars"].tolist() == ["5", "3", "1", "4"]
    assert set(rated["reference"]) == {"relative to 4 models in this store"}
    assert rated.loc["llama-3.2-1b", "warning"].startswith(f"rated against runs on other hardware ({H100})")
    assert rated.loc["qwen2.5-0.5b", "stars"] == NO_GPU
    assert "Rating by the AI Energy Score's rule" in (tmp_path / "out" / "summary.md").read_text()
    # A label per rated run, of the AI Energy Score label's size, also logged to the run it rates.
    labels = sorted((tmp_path / "out" / "labels").glob("*.png"))
    assert [p.name.rsplit("-", 1)[0] for p in labels] == ["gpt2", "llama-3.2-1b", "opt-125m", "phi-2"]
    assert imread(labels[0]).shape[:2] == (364, 260)
    for model in ("gpt2", "qwen2.5-0.5b"):
        logged = [a.path for a in client.list_artifacts(rated.loc[model, "run_id"], "label")]
        assert logged == ([f"label/gpt2-{rated.loc[model, 'run_id']}.png"] if model == "gpt2" else [])

    # A published range, 0 to 10 Wh on an H100: bins 2 Wh wide (2.0 is an edge: the bin above it).
    reference = tmp_path / "published.csv"
    reference.write_text(
        "task,size_class,low_wh_per_1k,high_wh_per_1k,hardware,source,date\n"
        f"text_generation,A,0,10,{H100},a published table,2025-02\n"
    )
    done = aggregate_cli(*args, "--rating-reference", str(reference), "--out", "ref", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rated = pd.read_csv(tmp_path / "ref" / "tables" / "rating.csv").set_index("model")
    assert rated.loc[["gpt2", "opt-125m", "phi-2", "llama-3.2-1b"], "stars"].tolist() == ["5", "4", "2", "4"]
    assert rated.loc["gpt2", "reference"] == "published range: a published table, 2025-02"
    assert pd.isna(rated.loc["gpt2", "warning"]) and "other hardware" in rated.loc["llama-3.2-1b", "warning"]


def test_a_reference_file_without_its_columns_is_refused_in_one_line(runs, store, tmp_path):
    reference = tmp_path / "bad.csv"
    reference.write_text("task,low\ntext_generation,1\n")
    args = ["--experiment", EXPERIMENT, "--tracking-uri", store, "--rating-reference", str(reference)]
    done = aggregate_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ecopipe.aggregate: error: --rating-reference {reference}: no ")
    )
    assert not (tmp_path / "aggregate").exists()  # refused before anything was read or written
