"""Accuracy against energy per sample over a cascade threshold grid: the curve, its area, its plot.

The curve sweeps one threshold shared by every member but the last over the grid tuned on
validation B, and is evaluated on the test split with the measured per-member costs (an accounting
curve: measuring every grid point in its own window would multiply the job's length by the grid).

Area under the curve: the best accuracy reachable at an energy of at most e per sample (a step
function: operating points are not interpolated) integrated over e from 0 to the always-heaviest
energy, divided by that energy. It reads as the mean accuracy the pool buys across the heaviest
member's budget: 1.0 would be perfect accuracy for free; a pool whose cheap settings are as accurate
as the heaviest scores close to that accuracy; one that needs the heaviest's full energy scores 0.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecopipe.selection.cascade import evaluate, normalise


@dataclass(frozen=True)
class CurvePoint:
    threshold: float  # shared by every member but the last; inf = always the heaviest
    accuracy: float
    energy_j_per_sample: float
    pareto: bool  # not dominated by another point of the curve


def pareto_mask(accuracy: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """True where no other point is at least as accurate for at most the energy, and better in one."""
    mask = np.ones(len(accuracy), dtype=bool)
    for i in range(len(accuracy)):
        at_least = (accuracy >= accuracy[i]) & (energy <= energy[i])
        better = at_least & ((accuracy > accuracy[i]) | (energy < energy[i]))
        mask[i] = not better.any()
    return mask


def cascade_curve(
    conf: np.ndarray, correct: np.ndarray, costs: np.ndarray, grid: np.ndarray
) -> list[CurvePoint]:
    members = conf.shape[0]
    points = [evaluate(normalise([t] * members), conf, correct, costs) for t in grid]
    accuracy = np.array([p.accuracy for p in points])
    energy = np.array([p.energy_j_per_sample for p in points])
    mask = pareto_mask(accuracy, energy)
    rows = zip(grid, accuracy, energy, mask, strict=True)
    return [CurvePoint(float(t), float(a), float(e), bool(m)) for t, a, e, m in rows]


def area_under(curve: Sequence[CurvePoint], energy_max: float) -> float:
    """Normalised area under the best-accuracy-within-energy step function on [0, energy_max]."""
    if energy_max <= 0 or not curve:
        return float("nan")
    order = sorted(curve, key=lambda p: p.energy_j_per_sample)
    area, best = 0.0, 0.0
    for point, following in zip(order, [*order[1:], None], strict=True):
        best = max(best, point.accuracy)
        start = min(point.energy_j_per_sample, energy_max)
        end = energy_max if following is None else min(following.energy_j_per_sample, energy_max)
        area += best * max(0.0, end - start)
    return area / energy_max


def curve_rows(curve: Sequence[CurvePoint]) -> list[dict[str, float | bool]]:
    """The curve as plain rows (ModelFacts.extra, a CSV, a table); +inf thresholds become 'inf'."""
    return [asdict(p) for p in curve]


def curve_csv(curve: Sequence[CurvePoint]) -> str:
    out = io.StringIO()
    out.write("threshold,accuracy,energy_j_per_sample,pareto\n")
    for p in curve:
        out.write(f"{p.threshold},{p.accuracy},{p.energy_j_per_sample},{int(p.pareto)}\n")
    return out.getvalue()


def plot_pareto(
    curve: Sequence[CurvePoint],
    path: str | Path,
    marks: Mapping[str, tuple[float, float]] = (),
    title: str = "accuracy vs energy per inference",
) -> Path:
    """Save the curve (grid points, Pareto front) and named (energy J, accuracy) marks as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        energy_mj = np.array([p.energy_j_per_sample for p in curve]) * 1000
        accuracy = np.array([p.accuracy for p in curve])
        front = np.array([p.pareto for p in curve], dtype=bool)
        ax.scatter(energy_mj, accuracy, s=12, color="0.6", label="shared threshold grid")
        order = np.argsort(energy_mj[front])
        ax.step(
            energy_mj[front][order], accuracy[front][order], where="post", color="C0", label="Pareto front"
        )
        for i, (name, (energy_j, acc)) in enumerate(dict(marks).items()):
            ax.scatter([energy_j * 1000], [acc], marker="D", s=36, color=f"C{i + 1}", label=name, zorder=3)
        ax.set_xlabel("energy per inference (mJ, per-member accounting)")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def write_artifacts(extra: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """A selection job's files, from its ModelFacts.extra: the curve (CSV, PNG) and the summary (JSON).

    The caller logs them (e.g. JobRun.log_file(path, "selection")) and may delete the folder after.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    curve = [CurvePoint(**row) for row in extra["pareto_curve"]]
    csv_path = folder / "pareto.csv"
    csv_path.write_text(curve_csv(curve))
    title = f"{extra.get('strategy', 'selection')} on pool {extra.get('pool', '?')}"
    png_path = plot_pareto(curve, folder / "pareto.png", extra.get("marks", {}), title)
    json_path = folder / "selection.json"
    json_path.write_text(json.dumps({k: v for k, v in extra.items() if k != "pareto_curve"}, indent=2))
    return [csv_path, png_path, json_path]
