"""PNG plots of the comparison tables: ESS by hardware and precision, energy against quality.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global state, no
display needed. A plot whose data is missing is skipped (the function returns None), never drawn empty.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ecopipe.aggregation.tables import ROW_DIMS

log = logging.getLogger(__name__)

MAX_PANELS = 12
MAX_LABELS = 30
LOG_SPREAD = 100.0  # a log axis once the largest value exceeds the smallest by this factor
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# Quality metrics the energy-quality plot knows the direction of (True: higher is better).
QUALITY_DIRECTION = {
    "accuracy": True,
    "r2": True,
    "f1": True,
    "exact_match": True,
    "bleu": True,
    "rouge_l": True,
    "perplexity": False,
    "wer": False,
    "cer": False,
    "mae": False,
    "rmse": False,
    "loss": False,
}


def key_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c in ROW_DIMS]


def _figure(panels: int, width: float = 5.5, height: float = 4.0):
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _wide_spread(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SPREAD


def ess_bars(ess: pd.DataFrame, path: Path) -> Path | None:
    """One panel per model (and dataset, strategy...), bars per precision grouped by hardware."""
    keys = key_columns(ess)
    hardware = [c for c in ess.columns if c not in keys]
    if ess.empty or not hardware or ess[hardware].isna().all().all():
        return None
    groups = [k for k in keys if k != "precision"]
    panels = list(ess.groupby(groups, sort=False))
    shown = panels[:MAX_PANELS]
    fig, axes = _figure(len(shown))
    if len(panels) > MAX_PANELS:
        fig.suptitle(f"ESS: first {MAX_PANELS} of {len(panels)} models (all in ess.csv)")
    for ax, (name, frame) in zip(axes, shown, strict=True):
        present = [h for h in hardware if frame[h].notna().any()]
        width = 0.8 / max(len(frame), 1)
        x = np.arange(len(present))
        for i, (_, row) in enumerate(frame.iterrows()):
            label = " ".join(str(row[k]) for k in keys if k not in groups)
            ax.bar(x + (i - (len(frame) - 1) / 2) * width, row[present].astype(float), width, label=label)
        ax.set_xticks(x, present, rotation=20, ha="right", fontsize=8)
        ax.set_title(" / ".join(str(v) for v in (name if isinstance(name, tuple) else (name,))), fontsize=10)
        ax.set_ylabel("ESS (higher is better)")
        if _wide_spread(frame[present].to_numpy(dtype=float).ravel()):
            ax.set_yscale("log")
        ax.legend(fontsize=7, title="precision", title_fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def _pareto(points: pd.DataFrame, higher_better: bool) -> pd.DataFrame:
    """Points no other point beats on both energy (lower) and quality."""
    ordered = points.sort_values(["energy", "quality"], ascending=[True, not higher_better])
    front, best = [], -np.inf
    for index, q in ordered["quality"].items():
        score = q if higher_better else -q
        if score > best:
            front.append(index)
            best = score
    return ordered.loc[front]


def energy_quality(energy: pd.DataFrame, quality: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """One panel per quality metric: energy per 1,000 inferences against quality, a marker per hardware,
    each point labelled with its row, and the Pareto front drawn through the points nothing beats."""
    keys = key_columns(energy)
    melted = energy.melt(id_vars=keys, var_name="hardware", value_name="energy").dropna()
    panels = []
    for name, table in quality.items():
        if name not in QUALITY_DIRECTION:
            continue
        q = table.melt(id_vars=key_columns(table), var_name="hardware", value_name="quality").dropna()
        points = melted.merge(q, on=[*keys, "hardware"])
        if not points.empty:
            panels.append((name, points))
    if not panels:
        return None
    fig, axes = _figure(len(panels), width=6.5, height=4.8)
    hardware = sorted({h for _, p in panels for h in p["hardware"]})
    style = {h: MARKERS[i % len(MARKERS)] for i, h in enumerate(hardware)}
    for ax, (name, points) in zip(axes, panels, strict=True):
        for i, (hw, frame) in enumerate(points.groupby("hardware")):
            ax.scatter(frame["energy"], frame["quality"], marker=style[hw], color=f"C{i % 10}", label=hw)
        front = _pareto(points, QUALITY_DIRECTION[name])
        # Every point labelled while that stays legible; past that, the Pareto front's only.
        for _, row in (points if len(points) <= MAX_LABELS else front).iterrows():
            label = "/".join(str(row[k]) for k in keys)
            ax.annotate(label, (row["energy"], row["quality"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.step(front["energy"], front["quality"], where="post", color="grey", lw=1, ls="--", label="Pareto")
        if _wide_spread(points["energy"].to_numpy(dtype=float)):
            ax.set_xscale("log")
        better = "higher" if QUALITY_DIRECTION[name] else "lower"
        ax.set_xlabel("energy per 1,000 inferences, gross (J)")
        ax.set_ylabel(f"{name} ({better} is better)")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path
