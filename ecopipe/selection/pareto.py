"""Accuracy against energy: the priced cascade curve, its area, and the study's one Pareto figure.

The curve sweeps one threshold shared by every member cheaper than the reference, with the
reference as terminal member, over the grid of validation B's scores, evaluated on the test split
and priced as the cascade pays (per call and per row, queued full batches): an accounting curve,
since measuring every grid point in its own window would multiply the job's length by the grid.

Area under a curve: the best accuracy reachable at an energy of at most e per sample (a step
function: operating points are not interpolated) integrated over e from 0 to the reference's
energy, divided by that energy. It reads as the mean accuracy the pool buys across the reference's
budget; the oracle frontier's area is the most any per-input choice could buy.

The figure: the oracle frontier (the bound), the priced cascade curve, and every arm's *measured*
point (energy from its windows, with its 95% interval, against its test accuracy), on a log energy
axis, so members, strategies and the bound are compared on one page.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecopipe.plot_labels import place_labels
from ecopipe.selection.costs import Prices
from ecopipe.selection.thresholds import evaluate, terminal_at


@dataclass(frozen=True)
class CurvePoint:
    threshold: float  # shared by every member cheaper than the reference; inf = the reference alone
    accuracy: float
    energy_j_per_sample: float
    pareto: bool  # not dominated by another point of the curve


@dataclass(frozen=True)
class MeasuredPoint:
    """One arm as its windows metered it: its energy and that figure's band (report.band_metrics)."""

    energy_per_1k_j: float
    low_per_1k_j: float
    high_per_1k_j: float
    accuracy: float
    member: bool  # a member alone (else a strategy)


def pareto_mask(accuracy: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """True where no other point is at least as accurate for at most the energy, and better in one."""
    mask = np.ones(len(accuracy), dtype=bool)
    for i in range(len(accuracy)):
        at_least = (accuracy >= accuracy[i]) & (energy <= energy[i])
        better = at_least & ((accuracy > accuracy[i]) | (energy < energy[i]))
        mask[i] = not better.any()
    return mask


def cascade_curve(
    conf: np.ndarray, correct: np.ndarray, prices: Prices, grid: np.ndarray, reference: int
) -> list[CurvePoint]:
    members = conf.shape[0]
    points = [evaluate(terminal_at(members, reference, t), conf, correct, prices) for t in grid]
    accuracy = np.array([p.accuracy for p in points])
    energy = np.array([p.energy_j_per_sample for p in points])
    mask = pareto_mask(accuracy, energy)
    rows = zip(grid, accuracy, energy, mask, strict=True)
    return [CurvePoint(float(t), float(a), float(e), bool(m)) for t, a, e, m in rows]


def area_under(accuracy: Sequence[float], energy: Sequence[float], energy_max: float) -> float:
    """Normalised area under the best-accuracy-within-energy step function on [0, energy_max]."""
    if energy_max <= 0 or not len(accuracy):
        return float("nan")
    order = np.argsort(energy, kind="stable")
    e = np.minimum(np.asarray(energy, dtype=np.float64)[order], energy_max)
    best = np.maximum.accumulate(np.asarray(accuracy, dtype=np.float64)[order])
    widths = np.diff(np.append(e, energy_max))
    return float((best * widths).sum() / energy_max)


def curve_csv(curve: Sequence[CurvePoint]) -> str:
    out = io.StringIO()
    out.write("threshold,accuracy,energy_j_per_sample,pareto\n")
    for p in curve:
        out.write(f"{p.threshold},{p.accuracy},{p.energy_j_per_sample},{int(p.pareto)}\n")
    return out.getvalue()


# kind of arm -> (colour, marker): members plain, each strategy family its own
_ARM_STYLE = {
    "member": ("0.45", "o"),
    "cascade": ("C0", "D"),
    "router": ("C1", "s"),
    "oracle": ("C2", "*"),
    "other": ("C4", "P"),
}
CURVE_CAPTION = (
    "The dashed curve is an accounting, not a measurement: a cascade whose members share one threshold, "
    "priced at each member's fitted per-call and per-row energy over the test rows it would send them. "
    "Markers are the arms as their own windows metered them; a cascade marker right of the curve paid "
    "more than the pricing says (overheads it leaves out)."
)


def _kind(name: str, point: MeasuredPoint) -> str:
    return "member" if point.member else name.split("_")[0]


def _numbered(measured: Mapping[str, MeasuredPoint]) -> list[tuple[int, str, MeasuredPoint]]:
    """The arms numbered from the cheapest: a number beside each marker, its name in the key (a
    dozen names crowd a corner of the plot)."""
    ordered = sorted(measured.items(), key=lambda kv: kv[1].energy_per_1k_j)
    return [(i, name, point) for i, (name, point) in enumerate(ordered, start=1)]


def plot_study(
    path: Path,
    frontier: tuple[np.ndarray, np.ndarray],
    curve: Sequence[CurvePoint],
    measured: Mapping[str, MeasuredPoint],
    reference: str,
    title: str,
    note: str,
    label: str,
) -> Path:
    """The oracle frontier, the priced cascade curve and the arms as their windows measured them, on a
    log energy axis; `label` says what the arms' energy is (measured, ESTIMATE, SIMULATED)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 6.2))
    try:
        accuracy, energy = frontier
        ax.step(
            energy * 1000, accuracy, where="post", color="0.3", lw=1.2, label="oracle frontier (priced bound)"
        )
        front = sorted((p for p in curve if p.pareto), key=lambda p: p.energy_j_per_sample)
        ax.step(
            [p.energy_j_per_sample * 1000 for p in front],
            [p.accuracy for p in front],
            where="post",
            color="C0",
            lw=1,
            ls="--",
            label="cascade, shared threshold (priced)",
        )
        # One colour and marker per kind of arm, not per arm (13 arms in 13 shades read as one).
        numbered = _numbered(measured)
        for _, name, point in numbered:
            colour, marker = _ARM_STYLE.get(_kind(name, point), _ARM_STYLE["other"])
            ax.errorbar(
                [point.energy_per_1k_j],
                [point.accuracy],
                # the band, its low end kept above zero on the log axis
                xerr=[
                    [min(point.energy_per_1k_j - point.low_per_1k_j, 0.999 * point.energy_per_1k_j)],
                    [point.high_per_1k_j - point.energy_per_1k_j],
                ],
                ls="none",
                marker=marker,
                ms=6,
                color=colour,
                elinewidth=0.8,
                capsize=2,
                mec="k" if name == reference else colour,
                mew=2 if name == reference else 0.5,
                zorder=3,
            )
        handles = [
            Line2D([], [], color="0.3", lw=1.2, label="oracle frontier (priced bound)"),
            Line2D([], [], color="C0", lw=1, ls="--", label="cascade curve, one shared threshold (priced)"),
        ]
        for i, name, point in numbered:
            colour, marker = _ARM_STYLE.get(_kind(name, point), _ARM_STYLE["other"])
            text = f"{i}  {name}" + (" (reference)" if name == reference else "")
            edge = dict(mec="k", mew=2) if name == reference else {}
            handles.append(Line2D([], [], ls="", marker=marker, color=colour, label=text, **edge))
        ax.set_xscale("log")
        # The frontier starts at zero accuracy; the measured points are what the axis must show.
        lowest = min(p.accuracy for p in measured.values())
        ax.set_ylim(
            max(0.0, lowest - 0.05),
            min(1.0, max(accuracy.max(), *(p.accuracy for p in measured.values())) + 0.02),
        )
        ax.set_xlabel(f"energy per 1,000 inferences (J, log scale); markers: {label}, with their band")
        ax.set_ylabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  title=f"arms, energy from their own windows: {label}", title_fontsize=7)  # fmt: skip
        fig.text(0.01, 0.01, textwrap.fill(f"{CURVE_CAPTION} {note}", 125), fontsize=7, color="0.3")
        fig.tight_layout(rect=(0, 0.09, 1, 1))
        place_labels(ax, [(p.energy_per_1k_j, p.accuracy, str(i)) for i, _, p in numbered], fontsize=7)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
