"""Stars by the AI Energy Score's rule: each run's GPU energy per 1,000 queries (Wh) placed in its task's
range, cut into five bins of equal width (not quantiles); the lowest bin gets 5 stars, the highest 1.
Text generation is rated within its size class: A up to 20 B parameters, B up to 66 B, C above.

The range comes from the runs in the store (each task's and class's lowest and highest, "relative to
N models in this store"), or from a reference file of published ranges (`REFERENCE_COLUMNS`), which
the user gives: none is shipped, for the leaderboard publishes no data file of its ranges to cite.

A value on the edge between two bins gets the bin above it, the fewer stars: the bins are
[low + k·w, low + (k+1)·w) for w = (high - low) / 5, the last one closed at `high`, and a value
outside a reference range gets the nearest end's stars. A run without GPU energy is not rated: the AI
Energy Score's metric is the GPU's energy, and CPU energy is not it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ecopipe.config import ConfigError, Task
from ecopipe.names import Metric, Param

STARS = 5
# Text generation's size classes by parameter count: (class, the most parameters it holds).
SIZE_CLASSES = (("A", 20e9), ("B", 66e9), ("C", math.inf))
REFERENCE_COLUMNS = ("task", "size_class", "low_wh_per_1k", "high_wh_per_1k", "hardware", "source", "date")
NO_GPU = "not rated: no GPU energy (the AI Energy Score rates the GPU's energy; CPU energy is not it)"
NO_WIDTH = "not rated: the range has no width (one value)"
NO_RANGE = "not rated: the reference file has no range for this task and class"


def stars(value: float, low: float, high: float) -> int | None:
    """5 stars in the lowest fifth of [low, high], 1 in the highest; None where the range has no width."""
    if not high > low:
        return None
    fifth = math.floor((value - low) * STARS / (high - low))
    return STARS - min(max(fifth, 0), STARS - 1)


def size_class(task: str, parameters: float) -> str:
    """A, B or C for text generation by its parameters; "" for a task rated whole."""
    if task != Task.text_generation.value:
        return ""
    return next(name for name, most in SIZE_CLASSES if parameters <= most)


def read_reference(path: Path) -> pd.DataFrame:
    """Published ranges, one row per task and size class; refused in one line where a column is missing."""
    try:
        frame = pd.read_csv(path, dtype={"size_class": "str"}, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as error:
        raise ConfigError(f"--rating-reference {path}: cannot be read ({error}).") from error
    missing = [c for c in REFERENCE_COLUMNS if c not in frame]
    if missing:
        raise ConfigError(
            f"--rating-reference {path}: no {', '.join(missing)} column; a reference file has the columns "
            f"{', '.join(REFERENCE_COLUMNS)}."
        )
    ends = frame[["low_wh_per_1k", "high_wh_per_1k"]].apply(pd.to_numeric, errors="coerce")
    if ends.isna().any().any() or (ends["high_wh_per_1k"] <= ends["low_wh_per_1k"]).any():
        raise ConfigError(
            f"--rating-reference {path}: every row needs numbers low_wh_per_1k < high_wh_per_1k."
        )
    return frame.assign(**ends)


def rate(jobs: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """A row per FINISHED job run: its GPU Wh per 1,000 queries, its stars (or why none), the range it
    was rated in and any warning."""
    runs = jobs[jobs["status"] == "FINISHED"].copy()
    runs["task"] = runs.get(f"params.{Param.TASK}", pd.Series("", index=runs.index)).fillna("")
    parameters = runs.get(Metric.PARAMETERS, pd.Series(math.nan, index=runs.index))
    runs["size class"] = [size_class(t, p) for t, p in zip(runs["task"], parameters, strict=True)]
    runs["wh"] = runs.get(Metric.GPU_WH_PER_1K, pd.Series(math.nan, index=runs.index))
    rows = []
    for (task, klass), group in runs.groupby(["task", "size class"], sort=True):
        rated = group[group["wh"].notna()]
        within = _range(task, klass, rated, reference)
        rows += [_row(run, within) for _, run in group.iterrows()]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Range:
    """What a task's (and size class's) runs are rated in."""

    low: float  # Wh per 1,000 queries; NaN where the reference file has none
    high: float
    label: str  # which range: the store's runs, or a published one with its source and date
    hardware: tuple[str, ...]  # the hardware it was measured on


def _range(task: str, klass: str, rated: pd.DataFrame, reference: pd.DataFrame | None) -> Range:
    if reference is None:
        models = rated["model"].nunique()
        label = f"relative to {models} model{'s' * (models != 1)} in this store"
        hardware = tuple(sorted(rated["hardware"].unique()))
        return Range(rated["wh"].min(), rated["wh"].max(), label, hardware)
    match = reference[(reference["task"] == task) & (reference["size_class"].fillna("") == klass)]
    if match.empty:
        return Range(math.nan, math.nan, NO_RANGE, ())
    published = match.iloc[0]
    label = f"published range: {published['source']}, {published['date']}"
    return Range(
        published["low_wh_per_1k"], published["high_wh_per_1k"], label, (str(published["hardware"]),)
    )


def _row(run: pd.Series, within: Range) -> dict[str, object]:
    row = {
        "model": run["model"],
        "task": run["task"],
        "size class": run["size class"],
        "hardware": run["hardware"],
        "run_id": run["run_id"],
        "GPU Wh per 1,000 queries": run["wh"],
        "range (Wh)": f"{within.low:.4g}-{within.high:.4g}" if pd.notna(within.low) else "",
        "reference": within.label,
        "warning": "",
    }
    if pd.isna(run["wh"]):
        return row | {"stars": NO_GPU}
    if pd.isna(within.low):
        return row | {"stars": NO_RANGE}
    given = stars(run["wh"], within.low, within.high)
    others = [h for h in within.hardware if h != run["hardware"]]
    if others:
        row["warning"] = f"rated against runs on other hardware ({', '.join(others)}): not comparable"
    return row | {"stars": given if given is not None else NO_WIDTH}
