"""The aggregate plots drawn from tables of 1, 12 and 40 rows (and more, paginated), as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecopipe.aggregation import plots
from ecopipe.aggregation.pivot import KEYS, NOT_LOGGED
from ecopipe.aggregation.rows import COMPLETE, ENERGY

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
    frame.attrs[KEYS] = ["model", "dataset", "precision"]  # as pivot.pivot records a table's row key
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


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plots save, to read what a reader will see in them."""
    from matplotlib.figure import Figure

    figures, real = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or real(fig, *a, **k))
    return figures


def label_boxes(ax) -> list:
    from ecopipe.plot_labels import text_box

    renderer = ax.figure.canvas.get_renderer()
    return [text_box(t, renderer) for t in ax.texts]


def test_energy_quality_draws_a_panel_per_data_set_with_its_bands_and_its_points_named(tmp_path, drawn):
    """Two data sets' accuracies do not compare: a panel each, each energy with its error bar, each
    point named, no two names on top of each other and none off the figure."""
    energy, accuracy = table(6, seed=1), table(6, seed=2, spread=10.0)
    low, high = energy.copy(), energy.copy()
    low[list(HARDWARE)], high[list(HARDWARE)] = energy[list(HARDWARE)] * 0.5, energy[list(HARDWARE)] * 2
    plots.energy_quality(energy, {"accuracy": accuracy}, tmp_path / "eq.png", bands=(low, high))
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["digits: energy against accuracy",
                                                 "wikitext: energy against accuracy"]  # fmt: skip
    width = fig.bbox.width
    for ax, dataset in zip(panels, ("digits", "wikitext"), strict=True):
        rows = energy[energy["dataset"] == dataset]
        points = int(rows[list(HARDWARE)].notna().sum().sum())
        assert len(ax.containers) == points  # an error bar per point: its band
        boxes = label_boxes(ax)
        assert len(boxes) == points if points <= 8 else 1 <= len(boxes) < points  # many: the frontier
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert all(box.x0 >= 0 and box.x1 <= width for box in boxes)


def test_ess_rows_of_one_data_set_stand_together_and_the_title_says_what_ess_rewards(tmp_path, drawn):
    frame = table(8)
    plots.ess_bars(frame, tmp_path / "ess.png")
    (fig,) = drawn
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    datasets = [label.split(" / ")[0] for label in labels]
    assert set(datasets) == {"digits", "wikitext"} and all(len(label.split(" / ")) == 3 for label in labels)
    assert datasets == sorted(datasets)  # grouped: each data set's rows together
    assert sum(1 for line in ax.lines if line.get_ydata()[0] == line.get_ydata()[1]) >= 1  # the line between
    assert "rewards size" in fig._suptitle.get_text()


def test_crowded_labels_are_stepped_apart():
    from matplotlib.figure import Figure

    from ecopipe.plot_labels import place_labels

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    place_labels(ax, [(0.3, 0.5, f"arm number {i}") for i in range(6)])
    boxes = label_boxes(ax)
    assert len(boxes) == 6 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_a_label_has_no_empty_slots(tmp_path, drawn):
    """A scikit-learn row beside transformers rows has no engine or phase: its label leaves them out."""
    frame = table(2)
    frame.insert(2, "engine", ["", "eager"])
    frame.insert(3, "phase", [None, "decode"])
    frame.attrs[KEYS] = ["model", "dataset", "engine", "phase", "precision"]
    plots.ess_bars(frame, tmp_path / "ess.png")
    (fig,) = drawn
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted([f"wikitext / {frame.model[0]} / fp32",
                                     f"wikitext / {frame.model[1]} / eager / decode / fp16"])  # fmt: skip
