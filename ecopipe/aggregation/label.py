"""A rated run's label, in the AI Energy Score label's proportions (260 x 364 px) and with its fields:
model, task, GPU Wh per 1,000 queries, date, hardware, stars and the range they were rated in. It adds
what theirs lacks: the figure's band and the word ESTIMATE where it is one, CO2e and water per 1,000
for the run's region, and ESS.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ecopipe.aggregation.rating import STARS
from ecopipe.names import CO2E_PER_1K, HIGH, LOW, WATER_PER_1K, Metric
from ecopipe.results import MEASURED
from ecopipe.units import eng, eng_range

WIDTH_PX, HEIGHT_PX, DPI = 260, 364, 100
FILLED, EMPTY = "#2e7d32", "#c8c8c8"


def _banded(run: pd.Series, metric: str, unit: str, scale: float = 1.0) -> str:
    """`1.23 Wh (1.1–1.4 Wh)`: the figure, with its band where one was logged."""
    point = run.get(metric)
    if point is None or pd.isna(point):
        return "not logged"
    low, high = run.get(f"{metric}{LOW}"), run.get(f"{metric}{HIGH}")
    text = eng(point * scale, unit)
    if low is not None and high is not None and pd.notna(low) and pd.notna(high) and low != high:
        text += f" ({eng_range(low * scale, high * scale, unit)})"
    return text


def draw(rated: pd.Series, run: pd.Series, path: Path) -> Path:
    """`rated`: the run's row of the rating table; `run`: its tidy job row (figures, tags)."""
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    given = rated["stars"]
    kind = run.get("figures")
    kind = kind if isinstance(kind, str) and kind else "figures of unstated source"
    measured = kind.startswith(MEASURED)
    date = pd.to_datetime(run["start_time"], unit="ms").strftime("%Y-%m-%d")
    task = f"task: {rated['task'] or 'not recorded'}"
    task += f", size class {rated['size class']}" if rated["size class"] else ""
    lines = [
        (0.95, str(rated["model"]), 11, "bold"),
        (0.89, task, 7, "normal"),
        (0.64, "GPU energy per 1,000 queries", 7, "normal"),
        (0.58, _banded(run, Metric.GPU_WH_PER_1K, "Wh"), 10, "bold"),
        (0.53, "measured" if measured else kind.split(",")[0], 7, "bold"),
        (
            0.45,
            f"CO2e {_banded(run, CO2E_PER_1K, 'g')} per 1,000, region {run.get('region', '?')}",
            6,
            "normal",
        ),
        (0.41, f"water {_banded(run, WATER_PER_1K, 'L')} per 1,000", 6, "normal"),
        (0.37, f"ESS {_ess(run)} (M effective parameters per g CO2e)", 6, "normal"),
        (0.255, f"{rated['reference']}", 6, "normal"),
        (0.22, f"range {rated['range (Wh)']} Wh", 6, "normal"),
        (0.15, f"{rated['hardware']}", 6, "normal"),
        (0.11, f"measured {date}, run {str(rated['run_id'])[:12]}", 6, "normal"),
        (0.04, "ecopipe: rated by the AI Energy Score's rule", 5, "normal"),
    ]
    warning = rated.get("warning")
    if isinstance(warning, str) and warning:
        lines.append((0.315, f"WARNING: {warning}", 5, "bold"))
    for y, text, size, weight in lines:
        axes.text(0.5, y, text, ha="center", va="center", fontsize=size, fontweight=weight, wrap=True)
    if str(given).isdigit():  # else why the run has no stars
        for i in range(STARS):
            colour = FILLED if i < int(given) else EMPTY
            axes.text(0.18 + i * 0.16, 0.76, "\u2605", ha="center", va="center", fontsize=20, color=colour)
    else:
        axes.text(0.5, 0.76, str(given), ha="center", va="center", fontsize=6, wrap=True)
    frame = Rectangle((0.02, 0.01), 0.96, 0.98, fill=False, linewidth=1.5, edgecolor="#333333")
    axes.add_patch(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def _ess(run: pd.Series) -> str:
    value = run.get(Metric.ESS)
    return f"{value:.4g}" if value is not None and pd.notna(value) else "not defined"


def draw_all(rating: pd.DataFrame, jobs: pd.DataFrame, folder: Path) -> list[Path]:
    """A label per run the rating gave stars, named `<model>-<run id>.png`."""
    runs = jobs.set_index("run_id")
    rated = rating[rating["stars"].astype("str").str.isdigit()]
    paths = []
    for _, row in rated.iterrows():
        name = f"{_safe(str(row['model']))}-{row['run_id']}.png"
        paths.append(draw(row, runs.loc[row["run_id"]], folder / name))
    return paths


def run_id_of(path: Path) -> str:
    """The run a label file is of (a run id has no dash)."""
    return path.stem.rsplit("-", 1)[-1]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
