"""Power over time, tool beside tool: the figure `python -m bench codecarbon` writes.

Each tool's estimate is drawn as it charges it: one flat level per interval it computes (ecopipe: per
measured window, from the energy and the edges the job logged; CodeCarbon: per measurement, from its
energy deltas), with what drives it beneath: the CPU utilisation each model reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure


@dataclass(frozen=True)
class PowerSeries:
    """One run's estimated power: `segments` (start_s, end_s, cpu_w, ram_w: one row per interval the
    tool charged at one power) and `load` (t_s, pct: the CPU utilisation the tool's model reads, % of
    all the machine's CPUs), both in seconds since the run's measured span began."""

    label: str
    segments: pd.DataFrame
    load: pd.DataFrame
    load_label: str
    color: str
    dashed: bool = False


def steps(segments: pd.DataFrame, column: str) -> tuple[list[float], list[float]]:
    """x and y of flat segments, one per interval, broken (NaN) where intervals do not touch."""
    xs: list[float] = []
    ys: list[float] = []
    previous_end = math.nan
    for start, end, value in zip(segments["start_s"], segments["end_s"], segments[column], strict=True):
        if xs and not math.isclose(start, previous_end, abs_tol=1e-3):  # touching: a vertical step
            xs.append(math.nan)
            ys.append(math.nan)
        xs += [start, end]
        ys += [value, value]
        previous_end = end
    return xs, ys


def plot_power(
    series: Sequence[PowerSeries], path: Path, title: str, notes: Mapping[str, str] | None = None
) -> Path:
    """Three panels over time: CPU W, RAM W (log scale), and the CPU load each model reads (%)."""
    figure = Figure(figsize=(10, 9.5), layout="constrained")
    cpu, ram, load = figure.subplots(3, 1, sharex=True, height_ratios=(3, 3, 2))
    for s in series:
        style = {"color": s.color, "linestyle": "--" if s.dashed else "-", "linewidth": 2}
        cpu.plot(*steps(s.segments, "cpu_w"), label=s.label, **style)
        ram_x, ram_y = steps(s.segments, "ram_w")
        # A zero has no place on the log axis: say so in the legend rather than drop the line silently.
        zero = all(y == 0 for y in ram_y if not math.isnan(y))
        ram.plot(ram_x, ram_y, label=s.label + (" (0 W throughout: not drawn)" if zero else ""), **style)
        if not s.load.empty:
            load.plot(s.load["t_s"], s.load["pct"], label=s.load_label, marker=".", markersize=4, **style)
    cpu.set_ylabel("CPU power, W (estimate)")
    cpu.set_ylim(bottom=0)
    cpu.set_title(
        "CPU: each tool's model of the power it charges the job\n(ecopipe: its threads' share of a "
        "SPECpower server, that server's memory per thread included)",
        fontsize=10,
    )
    ram.set_ylabel("RAM power, W (estimate, log scale)")
    ram.set_yscale("log")
    ram.set_title(
        "RAM: per GB held or installed beyond the CPU figure's memory (ecopipe), "
        "per DIMM guessed (CodeCarbon)",
        fontsize=10,
    )
    load.set_ylabel("CPU load read, % of all CPUs")
    load.set_ylim(0, 105)
    load.set_xlabel("time since the run's measured span began, s (each tool's own run of the same workload)")
    load.set_title("What each CPU model reads: the load curve's input", fontsize=10)
    for axes in (cpu, ram, load):
        axes.grid(True, alpha=0.3)
    cpu.legend(fontsize=8, loc="best")
    ram.legend(fontsize=8, loc="best")
    load.legend(fontsize=8, loc="best")
    figure.suptitle(title, fontsize=11)
    if notes:
        figure.text(0.01, 0.0, "  ".join(f"{k}: {v}" for k, v in notes.items()), fontsize=7, va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path
