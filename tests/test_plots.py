"""The aggregate plots drawn from tables of 1, 12 and 40 rows (and more, paginated), as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecopipe.aggregation import plots
from ecopipe.aggregation.tables import COMPLETE, ENERGY, KEYS, NOT_LOGGED

HARDWARE = ("NVIDIA H100 SXM 80GB", "NVIDIA T4", "AMD EPYC")
MODELS = ("gpt2", "opt-125m", "opt-1.3b", "qwen2.5-0.5b", "logistic_regression", "resnet-50", "svc")
PRECISIONS = ("fp32", "fp16", "int8")


def table(rows: int, seed: int = 0, spread: float = 1e4) -> pd.DataFrame:
    """`rows` model x precision rows (a dataset per model family), a column per hardware; ESS-like
    values over four orders of magnitude, one blank cell per hardware where rows allow."""
    rng = np.random.default_rng(seed)
    keys = [(f"{MODELS[i % len(MODELS)]}-{i // len(MODELS)}", PRECISIONS[i % 3]) for i in range(rows)]
    frame = pd.DataFrame(keys, columns=["model", "precision"])
    frame.insert(
        1, "dataset", ["digits" if "svc" in m or "logistic" in m else "wikitext" for m in frame.model]
    )
    for j, hw in enumerate(HARDWARE):
        values = np.exp(rng.uniform(0, np.log(spread), rows)) * 0.08
        if rows > 3:
            values[j] = np.nan
        frame[hw] = values
    frame.attrs[KEYS] = ["model", "dataset", "precision"]  # as tables.pivot records a table's row key
    return frame


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("rows", [1, 12, 40])
def test_ess_is_one_grouped_chart_of_every_row(tmp_path, rows):
    (path,) = plots.ess_bars(table(rows), tmp_path / "ess.png")
    assert path == tmp_path / "ess.png" and is_png(path)


def test_ess_rows_beyond_a_page_go_to_numbered_files_never_dropped(tmp_path):
    paths = plots.ess_bars(table(2 * plots.ROWS_PER_PAGE + 5), tmp_path / "ess.png")
    assert [p.name for p in paths] == ["ess.png", "ess_2.png", "ess_3.png"]
    assert all(is_png(p) for p in paths)


def test_ess_without_a_positive_value_draws_nothing(tmp_path):
    frame = table(3)
    frame[list(HARDWARE)] = np.nan
    assert plots.ess_bars(frame, tmp_path / "ess.png") == []
    assert not (tmp_path / "ess.png").exists()


@pytest.mark.parametrize("rows", [1, 12, 40])
def test_energy_quality_one_frontier_per_dataset(tmp_path, rows):
    energy = table(rows, seed=1)
    accuracy = table(rows, seed=2, spread=10.0)
    sources = energy.copy()
    sources[list(HARDWARE)] = [
        "nvml_counter+rapl",
        "nvml_power_polling",
        "estimated_specpower+estimated_per_gb",
    ]
    (path,) = plots.energy_quality(energy, {"accuracy": accuracy}, tmp_path / "eq.png", sources)
    assert is_png(path)


def test_text_cells_are_not_drawn_and_incomplete_energy_rows_are_left_out(tmp_path):
    energy = table(4, seed=1).astype({HARDWARE[0]: "object"})
    energy.loc[1, HARDWARE[0]] = NOT_LOGGED  # a run without the figure: text, never a point
    energy.insert(3, ENERGY, [COMPLETE, COMPLETE, COMPLETE, "INCOMPLETE: gpu not metered (MIG instance)"])
    energy.attrs[KEYS] = [*energy.attrs[KEYS], ENERGY]
    accuracy = energy.copy()
    accuracy[list(HARDWARE)] = 0.9
    (path,) = plots.energy_quality(energy, {"accuracy": accuracy}, tmp_path / "eq.png")
    assert is_png(path)
    assert len(plots.ess_bars(energy, tmp_path / "ess.png")) == 1
    # A table whose only rows with values are INCOMPLETE: nothing to draw.
    energy.loc[:2, list(HARDWARE)] = np.nan
    assert plots.ess_bars(energy, tmp_path / "none.png") == []
    assert plots.energy_quality(energy, {"accuracy": accuracy}, tmp_path / "none_eq.png") == []


def test_pareto_keeps_the_points_nothing_beats():
    points = pd.DataFrame({"energy": [1.0, 2.0, 3.0, 4.0], "quality": [0.5, 0.9, 0.8, 0.95]})
    assert list(plots._pareto(points, higher_better=True).index) == [0, 1, 3]
    assert list(plots._pareto(points, higher_better=False).index) == [0]


def test_family_groups_sizes_of_one_model():
    assert {plots.family(m) for m in ("opt-125m", "opt-2.7b")} == {"opt"}
    assert plots.family("qwen2.5-0.5b") == "qwen2.5" and plots.family("svc") == "svc"
