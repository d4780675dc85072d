"""PNG plots of the comparison tables: ESS by model, precision and hardware; energy against quality.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global state, no
display needed. A plot whose data is missing is skipped (nothing is returned), never drawn empty. Every
row is drawn: a long table is split into numbered pages (`ess.png`, `ess_2.png`...), never cut short;
but rows whose energy is INCOMPLETE (a device not metered, the tables' `energy` column), whose figures
leave that device out, or a WHOLE GPU's (MIG: every instance's work), are left out of the plots with a
note saying how many.
"""

from __future__ import annotations

import functools
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter, LogFormatter

from ecopipe.aggregation.pivot import KEYS, by_dataset, key_columns, numbers
from ecopipe.aggregation.rows import COMPLETE, ENERGY
from ecopipe.plot_labels import place_labels

log = logging.getLogger(__name__)
P = ParamSpec("P")

ROWS_PER_PAGE = 40  # bar groups on one ESS page: beyond that the labels stop being legible
MAX_PAGES = 10  # ESS pages at most: a store with more rows is read in its tables
MAX_HARDWARE = 10  # bars per group at most, one colour each (a shared store may hold hundreds of names)
LOG_SPREAD = 100.0  # energy axes turn logarithmic once the largest value exceeds the smallest by this
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^", "int4": "v"}
ESTIMATE_NOTE = "hollow markers: energy ESTIMATED (no power sensor read), not measured"
BAND_NOTE = "error bars: each figure's band (an estimate's coefficient range and the 95% CI over trials)"
# What ESS rewards, wherever it is shown: a bigger model scores higher for the same CO2e.
ESS_MEANING = (
    "Higher is better only between models of one task and data set: ESS counts parameters per g CO2e, "
    "so it rewards size, not the energy of the answer"
)
ESTIMATED = "estimat|fake|unknown"  # a source label that is not a plain measurement
INCOMPLETE_NOTE = (
    "{} rows with INCOMPLETE energy (a device not metered) or a WHOLE GPU's (MIG) left out: see the tables"
)
BOUNDED_AT_ONE = ("accuracy", "r2", "f1", "exact_match", "rouge_l")  # scores no model exceeds 1 on
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


def _wrapped(text: str, width: int = 110) -> str:
    """Each line of a title or axis label folded to the figure's width: a row key of many config keys
    would run off the image."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _complete(table: pd.DataFrame | None) -> tuple[pd.DataFrame | None, int]:
    """The table's rows whose energy is complete, without the ENERGY column (the same in all of them),
    and how many rows it has that are not."""
    if table is None or ENERGY not in key_columns(table):
        return table, 0
    complete = table[ENERGY] == COMPLETE
    kept = table[complete].drop(columns=ENERGY)
    kept.attrs[KEYS] = [k for k in key_columns(table) if k != ENERGY]
    return kept, int((~complete).sum())


def family(model: str) -> str:
    """`opt-1.3b` -> `opt`, `qwen2.5-0.5b` -> `qwen2.5`: the colour a model shares with its siblings."""
    return str(model).split("-")[0]


def _label(row: pd.Series, keys: list[str]) -> str:
    """`svc / digits / fp32`: the row's key values, those it has no value for (a scikit-learn row's
    engine beside transformers rows) left out rather than shown as empty slots."""
    return " / ".join(
        str(row[k]) for k in keys if pd.notna(row[k]) and str(row[k]).strip() not in ("", "nan")
    )


def _page_paths(path: Path, pages: int) -> list[Path]:
    return [path if i == 0 else path.with_name(f"{path.stem}_{i + 1}{path.suffix}") for i in range(pages)]


def _aligned(frame: pd.DataFrame | None, like: pd.DataFrame, hardware: list[str]) -> pd.DataFrame | None:
    """`frame`'s cells in `like`'s rows (matched on the key columns), for the hardware columns."""
    if frame is None:
        return None
    keys = key_columns(like)
    merged = like[keys].astype("str").merge(frame.astype({k: "str" for k in keys}), on=keys, how="left")
    merged.index = like.index
    return merged.reindex(columns=hardware)


def plain_text(draw: Callable[P, list[Path]]) -> Callable[P, list[Path]]:
    """Draw with every label as plain text: names come from the store, and a `$...$` pair in one would
    be parsed as mathtext (a bad one stops the drawing)."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> list[Path]:
        with rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return drawn


def _most_shown(values: pd.DataFrame, hardware: list[str]) -> tuple[list[str], int]:
    """At most MAX_HARDWARE columns, those with the most values, in table order; and how many are left out."""
    if len(hardware) <= MAX_HARDWARE:
        return hardware, 0
    counts = (values[hardware] > 0).sum()
    kept = set(sorted(hardware, key=lambda h: (-counts[h], h))[:MAX_HARDWARE])
    return [h for h in hardware if h in kept], len(hardware) - MAX_HARDWARE


@plain_text
def ess_bars(
    ess: pd.DataFrame,
    path: Path,
    low: pd.DataFrame | None = None,
    high: pd.DataFrame | None = None,
    sources: pd.DataFrame | None = None,
) -> list[Path]:
    """One grouped horizontal bar chart: a group per row (model x precision x ...), a bar per hardware
    in its own colour, all on one logarithmic ESS axis so that 0.08 and 1,400 look as different as
    they are; each bar's band (`low`, `high` tables) as an error bar, and a bar hatched where its
    energy is estimated (`sources`). Rows beyond ROWS_PER_PAGE go to further numbered files."""
    ess, incomplete = _complete(ess)
    low, high, sources = (_complete(table)[0] for table in (low, high, sources))
    ess = by_dataset(ess)
    keys = key_columns(ess)
    hardware = [c for c in ess.columns if c not in keys]
    values = numbers(ess[hardware]) if hardware else ess
    lows, highs = (_aligned(t, ess, hardware) for t in (low, high))
    estimated = _aligned(sources, ess, hardware)
    # Cells with a value or a "not defined" that the log axis cannot show; the table has them all.
    dropped = int(ess[hardware].notna().sum().sum() - (values > 0).sum().sum())
    hardware, hardware_left_out = _most_shown(values, hardware)
    shown = ess[(values[hardware] > 0).any(axis=1)] if hardware else ess.iloc[0:0]
    if shown.empty:
        return []
    pages = min(-(-len(shown) // ROWS_PER_PAGE), MAX_PAGES)
    rows_left_out = max(len(shown) - pages * ROWS_PER_PAGE, 0)
    colours = {h: f"C{i % 10}" for i, h in enumerate(hardware)}
    lo, hi = values[values > 0].min().min(), values[values > 0].max().max()
    for end in (e for e in (lows, highs) if e is not None):  # the bands fit on the axis too
        ends = numbers(end).where(values > 0)
        lo, hi = min(lo, ends[ends > 0].min().min()), max(hi, ends[ends > 0].max().max())
    written = []
    for page, out in enumerate(_page_paths(path, pages)):
        rows = shown.iloc[page * ROWS_PER_PAGE : (page + 1) * ROWS_PER_PAGE]
        present = [h for h in hardware if (values.loc[rows.index, h] > 0).any()]
        height = 0.8 / len(present)
        fig = Figure(figsize=(9, 1.6 + 0.22 * len(rows) * max(1, 0.6 * len(present))), layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(rows))[::-1]  # the table's first row on top
        hatched = unbounded = False
        for i, hw in enumerate(present):
            v = values.loc[rows.index, hw].where(lambda s: s > 0)
            at = y + (len(present) - 1 - 2 * i) * height / 2
            hatch = None
            if estimated is not None:
                guessed = (
                    estimated.loc[rows.index, hw].fillna("unknown").astype("str").str.contains(ESTIMATED)
                )
                hatch = ["//" if g else None for g in guessed]
                hatched |= bool(guessed[v.notna()].any())
            ax.barh(at, v, height, color=colours[hw], label=hw, hatch=hatch, edgecolor="white")
            if lows is not None and highs is not None:
                lo_v = numbers(lows.loc[rows.index, [hw]])[hw]
                hi_v = numbers(highs.loc[rows.index, [hw]])[hw]
                both = (v.notna() & lo_v.notna() & hi_v.notna()).to_numpy()  # no error bar without both ends
                unbounded |= bool((v.notna() & lo_v.notna() & hi_v.isna()).any())
                err = np.array([(v - lo_v)[both].clip(lower=0), (hi_v - v)[both].clip(lower=0)])
                ax.errorbar(v[both], at[both], xerr=err, fmt="none", ecolor="0.15", elinewidth=0.9, capsize=2)
        ax.set_yticks(y, [_label(r, keys) for _, r in rows.iterrows()], fontsize=8)
        if "dataset" in keys:  # a line between data sets: bars compare within one only
            changes = np.flatnonzero(rows["dataset"].to_numpy()[1:] != rows["dataset"].to_numpy()[:-1])
            for change in changes:
                ax.axhline(y[change] - 0.5, color="0.2", lw=0.8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xscale("log")
        ax.set_xlim(lo / 2, hi * 2)  # one scale on every page, so pages compare
        label = "ESS: effective parameters (M) per g CO2e per 1,000 inferences (log scale)"
        if dropped:  # under the axis label, where the layout makes room for it
            label += (
                f"\n{dropped} not defined, not logged or <= 0 (no place on a log axis): left out here, "
                "in tables/ess.csv"
            )
        if incomplete:
            label += "\n" + INCOMPLETE_NOTE.format(incomplete)
        left_out = []
        if hardware_left_out:
            left_out.append(f"{hardware_left_out} hardware beyond the {MAX_HARDWARE} with the most values")
        if rows_left_out:
            left_out.append(f"{rows_left_out} rows beyond {MAX_PAGES} pages")
        if left_out:
            label += f"\nleft out to keep the plot legible: {', '.join(left_out)}; see tables/ess.csv"
        if lows is not None:
            label += "\n" + BAND_NOTE
        if unbounded:
            label += (
                "\nno error bar: the CO2e band reaches 0, so the ESS has no upper bound (tables: 'at least')"
            )
        if hatched:
            label += "\nhatched bars: ESTIMATE (energy from a model, no power sensor read), not measured"
        fig.supxlabel(_wrapped(label), fontsize=10)  # the figure's width: long row labels narrow the axes
        # Plain numbers (3, 40, 0.5), not 3x10^0; minor labels only where the range is narrow.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
        ax.grid(axis="x", which="major", alpha=0.3)
        title = f"ESS by {' x '.join(keys)} and hardware. {ESS_MEANING}"
        if pages > 1:
            title += f", page {page + 1} of {pages} ({len(shown)} rows)"
        fig.suptitle(_wrapped(title), fontsize=10)
        ax.legend(title="hardware", fontsize=7, title_fontsize=7, loc="best")
        fig.savefig(out, dpi=110)
        written.append(out)
    return written


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


def _melted(table: pd.DataFrame, name: str, as_numbers: bool = True) -> pd.DataFrame:
    """A table as (row key..., hardware, `name`) rows, its key as text; cells as numbers (text: NaN)."""
    keys = key_columns(table)
    cells = table.drop(columns=keys)
    wide = table[keys].astype("str").join(numbers(cells) if as_numbers else cells)
    return wide.melt(id_vars=keys, var_name="hardware", value_name=name).astype({"hardware": "str"})


def _points(
    energy: pd.DataFrame,
    quality: pd.DataFrame,
    sources: pd.DataFrame | None,
    bands: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    on = [*key_columns(energy), "hardware"]
    points = _melted(energy, "energy").dropna().merge(_melted(quality, "quality").dropna(), on=on)
    for name, table in zip(("low", "high"), bands, strict=True) if bands else ():
        points = points.merge(_melted(table, name), on=on, how="left")
    points["estimated"] = False
    if sources is not None and not points.empty:
        points = points.merge(_melted(sources, "source", as_numbers=False), on=on, how="left")
        points["estimated"] = points["source"].fillna("unknown").str.contains(ESTIMATED)
    return points[points["energy"] > 0]


PANELS_PER_ROW = 3


@plain_text
def energy_quality(
    energy: pd.DataFrame,
    quality: dict[str, pd.DataFrame],
    path: Path,
    sources: pd.DataFrame | None = None,
    bands: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> list[Path]:
    """A panel per quality metric and data set (their axes do not compare): energy per 1,000
    inferences (x) against quality (y); colour by model family, marker by precision, hollow where the
    energy is estimated, each energy's band (`bands`: the low and high tables) as an error bar; the
    panel's Pareto frontier, its points labelled (every point when few)."""
    energy, incomplete = _complete(energy)
    quality = {name: _complete(table)[0] for name, table in quality.items()}
    sources = _complete(sources)[0]
    bands = (_complete(bands[0])[0], _complete(bands[1])[0]) if bands else None
    keys = key_columns(energy)
    panels = []
    for name, table in quality.items():
        if name in QUALITY_DIRECTION and not (points := _points(energy, table, sources, bands)).empty:
            groups = (
                points.groupby("dataset", sort=True, dropna=False) if "dataset" in points else [("", points)]
            )
            panels += [(name, str(dataset), group) for dataset, group in groups]
    if not panels:
        return []
    everything = pd.concat([p for *_, p in panels])
    families = sorted({family(m) for m in everything["model"]})
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    precisions = sorted(set(everything["precision"]), key=lambda p: (p not in PRECISION_MARKERS, p))
    markers = {p: PRECISION_MARKERS.get(p, MARKERS[i % len(MARKERS)]) for i, p in enumerate(precisions)}
    several_hw = everything["hardware"].nunique() > 1
    label_keys = [k for k in keys if k != "dataset"]
    columns = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(6.2 * columns, 1.2 + 4.6 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    names = {}  # axes -> its points' labels
    for ax, (name, dataset, points) in zip(axes, panels, strict=False):
        higher = QUALITY_DIRECTION[name]
        for _, p in points.iterrows():
            colour = colours[family(p["model"])]
            if pd.notna(p.get("low")) and pd.notna(p.get("high")) and p["low"] != p["high"]:
                err = [[max(p["energy"] - p["low"], 0)], [max(p["high"] - p["energy"], 0)]]
                ax.errorbar(p["energy"], p["quality"], xerr=err, fmt="none", ecolor=colour, elinewidth=1,
                            capsize=3, alpha=0.8)  # fmt: skip
            face = "none" if p["estimated"] else colour
            ax.scatter(p["energy"], p["quality"], marker=markers[p["precision"]], s=46, linewidths=1.4,
                       edgecolors=colour, facecolors=face, zorder=3)  # fmt: skip
        front = _pareto(points, higher)
        ax.step(front["energy"], front["quality"], where="post", color="0.35", lw=1, ls="--")
        if _wide_spread(points["energy"].to_numpy(dtype=float)):
            ax.set_xscale("log")
        ax.margins(x=0.08, y=0.12)
        if name in BOUNDED_AT_ONE:  # margins round a constant 1.0 would read as an accuracy of 1.06
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
        named = (points if len(points) <= 8 else front).drop_duplicates([*label_keys, "hardware"])
        shown_keys = label_keys + (["hardware"] if several_hw else [])
        names[ax] = [(p["energy"], p["quality"], _label(p, shown_keys)) for _, p in named.iterrows()]
        ax.xaxis.set_major_formatter(EngFormatter(unit="J"))
        ax.set_xlabel("energy per 1,000 inferences, gross")
        ax.set_ylabel(f"{name} ({'higher' if higher else 'lower'} is better)")
        panel = f"{dataset}: energy against {name}" if dataset else f"energy against {name}"
        ax.set_title(_wrapped(panel, 60), fontsize=10)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=colours[f], label=f) for f in families]
    handles += [Line2D([], [], ls="", marker=markers[p], color="0.3", label=p) for p in precisions]
    if everything["estimated"].any():
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="0.3", label="estimated"))
    handles.append(Line2D([], [], ls="--", color="0.35", label="Pareto frontier"))
    fig.legend(handles=handles, fontsize=7, loc="outside right upper", title="family / precision",
               title_fontsize=7)  # fmt: skip
    title = "Energy per 1,000 inferences against quality: a panel per data set (their scores do not compare)"
    if everything["estimated"].any():
        title += "\n" + ESTIMATE_NOTE
    if bands is not None:
        title += "\n" + BAND_NOTE
    if incomplete:
        title += "\n" + INCOMPLETE_NOTE.format(incomplete)
    fig.suptitle(_wrapped(title, 60 + 50 * columns), fontsize=10)
    for ax, points in names.items():  # last: the labels are placed on the finished layout
        place_labels(ax, points)
    fig.savefig(path, dpi=110)
    return [path]


def _wide_spread(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SPREAD
