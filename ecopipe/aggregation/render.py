"""Tables as files: numeric CSV (one per table, the energy sources in their own), and a Markdown and an
HTML summary whose cells read as engineering notation with SI prefixes (`29.4 mJ ±2.1 mJ`), the unit in
each heading, the energy source once per column (and beside a cell only where it differs), and
percentages as percentages; a cell's text (why a run has no figure: "not logged") as it is. Folders:
tables/, plots/, data/ (every run read, failed jobs).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ecopipe.aggregation import label, plots
from ecopipe.aggregation.pivot import key_columns, numbers
from ecopipe.aggregation.specs import (
    DECODE_TABLE,
    GAIN_TABLE,
    HIGH_SUFFIX,
    LOW_SUFFIX,
    RATING_TABLE,
    RUNS_SUFFIX,
    SOURCE_TABLE,
    SPREAD_SUFFIX,
    spec_of,
)
from ecopipe.monitor.stats import unresolved
from ecopipe.units import eng, eng_range, percent, rate, rate_span

# Shown inside their table's cells, not as sections.
_HIDDEN = ("_ci95", RUNS_SUFFIX, SPREAD_SUFFIX, LOW_SUFFIX, HIGH_SUFFIX)
ERROR_CHARS = 300  # of an error in the summaries; failed.csv keeps it whole
FAILED_TITLE = "Failed jobs (FAILED or KILLED; superseded: a later run of the same config finished)"
SOURCE_ROW = "energy source"
TABLES, PLOTS, DATA, LABELS = "tables", "plots", "data", "labels"


def _number(value: object, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


THROUGHPUT_TABLE = "throughput"  # a rate: per second, minute or hour, as the value calls for


def _unit(name: str) -> str | None:
    """The SI unit a table's cells are written in (its spec's); None: plain numbers."""
    spec = spec_of(name)
    return spec.unit if spec is not None else None


def _formatter(name: str, column: str = ""):
    """How a table's (or a column's) numbers read: SI-prefixed unit, ratio, percentage or plain."""
    unit = _unit(name)
    if name == DECODE_TABLE or column.endswith(("[J]", "(J)")):
        unit = "J"
    if name == THROUGHPUT_TABLE:
        return rate
    if unit is not None:
        return lambda v: eng(v, unit)
    if name == GAIN_TABLE:
        return lambda v: "" if pd.isna(v) else f"{v:.3g}x"
    if column.startswith("savings"):
        return percent
    return _number


def _column_sources(sources: pd.DataFrame, column: str) -> tuple[pd.Series, str]:
    cells = sources[column] if column in sources else pd.Series("source unknown", index=sources.index)
    runs = cells.dropna().value_counts(sort=False)  # the cells with a run vote; a tie: the first row's
    cells = cells.where(cells.notna(), "source unknown")
    return cells, (str(runs.idxmax()) if not runs.empty else "")


NO_FINISHED_RUN = "no finished run"


def display(name: str, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A table's cells as text: the value, its band (low-high: an estimate's coefficient range and
    the 95% CI over the run's trials; a measurement's CI), else its 95% CI, the spread between runs
    where a cell has several, and for energy figures a last row with each column's source (a cell
    whose source differs from its column's says so itself)."""
    frame = tables[name]
    keys = key_columns(frame)
    out = frame[keys].astype("str").copy()

    def lookup(other: pd.DataFrame | None, as_numbers: bool = True) -> pd.DataFrame | None:
        """`other`'s cells in this table's rows; as numbers, its text ("not logged") blank."""
        if other is None:
            return None
        merged = frame[keys].astype("str").merge(other.astype({k: "str" for k in keys}), on=keys, how="left")
        cells = merged.drop(columns=keys)
        return numbers(cells) if as_numbers else cells

    ci95, runs, spread, low, high = (lookup(tables.get(name + suffix)) for suffix in _HIDDEN)
    spec = spec_of(name)
    energy = spec is not None and spec.energy
    sources = lookup(tables.get(SOURCE_TABLE), as_numbers=False) if energy and keys else None
    footer = {}
    for column in (c for c in frame.columns if c not in keys):
        fmt = _formatter(name, str(column))
        unit = _unit(name) or ("J" if name == DECODE_TABLE else "")
        column_sources, usual = _column_sources(sources, column) if sources is not None else (None, "")
        footer[column] = usual
        cells = []
        for i, value in enumerate(frame[column]):
            if isinstance(value, str):  # why the run has no figure: nothing to add to it
                cells.append(value)
                continue
            if pd.isna(value):  # an empty cell says why (the failed jobs' table names those that failed)
                cells.append(NO_FINISHED_RUN)
                continue
            text = fmt(value)
            band = [t[column].iat[i] if t is not None and column in t else None for t in (low, high)]
            has = [b is not None and pd.notna(b) for b in band]
            half = ci95[column].iat[i] if ci95 is not None and column in ci95 else math.nan
            if text and all(has) and band[0] != band[1]:
                text += f" ({eng_range(*band, unit) if unit else f'{fmt(band[0])}–{fmt(band[1])}'})"
            elif text and has[0] and not has[1]:  # a low end without a high one: no upper bound
                text += f" (at least {eng(band[0], unit) if unit else fmt(band[0])})"
            elif text and pd.notna(half):
                in_span = name == THROUGHPUT_TABLE  # a rate's CI in its figure's span
                text += f" ±{rate(half, span=rate_span(value)) if in_span else eng(half, unit, 2)}"
            if text and unresolved(value, half):
                text += " UNRESOLVED (95% CI over half the figure)"
            if text and runs is not None and column in runs and runs[column].iat[i] >= 2:
                text += f" (runs: {int(runs[column].iat[i])}, CV {percent(spread[column].iat[i], 2)})"
            if text and column_sources is not None and column_sources.iat[i] != usual:
                text += f" ({column_sources.iat[i]})"
            cells.append(text)
        out[column] = cells
    if sources is not None and len(frame):
        row = {k: "" for k in keys} | {keys[0]: SOURCE_ROW} | footer
        out = pd.concat([out, pd.DataFrame([row])], ignore_index=True)
    return out


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate, not a dependency)."""

    def cell(value: object) -> str:
        return _number(value).replace("|", "\\|").replace("\n", " ")

    header = [cell(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def shown(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables a reader sees, as text (display): the hidden ones are inside their cells."""
    return {n: display(n, tables) for n in shown_names(tables)}


def shown_names(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The tables a reader sees; the others (CIs, bands, run counts, sources) are inside their cells."""
    return [n for n in tables if n != SOURCE_TABLE and not n.endswith(_HIDDEN)]


# What a sweep and the aggregation print on the terminal: energy and CO2e per 1,000 lead.
HEADLINE_TABLES = ("energy_gross", "co2e")


def headline_text(tables: Mapping[str, pd.DataFrame], titles: Mapping[str, str]) -> str:
    """The headline tables as Markdown, for the terminal; the rest is in the files."""
    parts = [f"{titles.get(n, n)}\n\n{markdown(display(n, tables))}" for n in HEADLINE_TABLES if n in tables]
    return "\n\n".join(parts)


def _sections(
    tables: Mapping[str, pd.DataFrame], titles: Mapping[str, str], failed: pd.DataFrame
) -> list[tuple[str, pd.DataFrame]]:
    sections = [(titles.get(n, n), frame) for n, frame in shown(tables).items()]
    shown_failed = failed.assign(error=failed["error"].astype("str").str.slice(0, ERROR_CHARS))
    return [*sections, (FAILED_TITLE, shown_failed)]


def write_markdown(
    path: Path,
    heading: str,
    notes: Sequence[str],
    sections: list[tuple[str, pd.DataFrame]],
    images: Sequence[Path],
) -> Path:
    parts = [f"# {heading}", "", *(f"- {n}" for n in notes)]
    for title, frame in sections:
        parts += ["", f"## {title}", "", markdown(frame) if not frame.empty else "None."]
    parts += ["", *(f"![{image.stem}]({PLOTS}/{image.name})" for image in images)]
    path.write_text("\n".join(parts) + "\n")
    return path


def write_html(
    path: Path,
    heading: str,
    notes: Sequence[str],
    sections: list[tuple[str, pd.DataFrame]],
    images: Sequence[Path],
) -> Path:
    body = [f"<h1>{html.escape(heading)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(n)}</li>" for n in notes]
    body.append("</ul>")
    for title, frame in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(frame.to_html(index=False, na_rep="", border=0) if not frame.empty else "<p>None.</p>")
    body += [f'<img src="{PLOTS}/{html.escape(i.name)}" alt="{html.escape(i.stem)}">' for i in images]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
    )
    path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(heading)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    return path


MANIFEST = ".ecopipe-files"  # what the last aggregation wrote into its folder


def write_all(
    out_dir: Path,
    heading: str,
    notes: Sequence[str],
    tables: Mapping[str, pd.DataFrame],
    titles: Mapping[str, str],
    failed: pd.DataFrame,
    jobs: pd.DataFrame,
) -> list[Path]:
    """summary.md and summary.html at the top; tables/ a CSV per table; plots/ the PNGs; data/
    failed.csv and runs.csv (every job run read)."""
    _remove_previous(out_dir)
    folders = {name: out_dir / name for name in (TABLES, PLOTS, DATA)}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in tables.items():
        frame.to_csv(folders[TABLES] / f"{name}.csv", index=False)
        files.append(folders[TABLES] / f"{name}.csv")
    failed.to_csv(folders[DATA] / "failed.csv", index=False)
    jobs.to_csv(folders[DATA] / "runs.csv", index=False)
    files += [folders[DATA] / "failed.csv", folders[DATA] / "runs.csv"]
    images: list[Path] = []
    sources = tables.get(SOURCE_TABLE)
    if "ess" in tables:
        low, high = tables.get("ess" + LOW_SUFFIX), tables.get("ess" + HIGH_SUFFIX)
        images += plots.ess_bars(tables["ess"], folders[PLOTS] / "ess.png", low, high, sources)
    if "energy_gross" in tables:
        quality = {n.removeprefix("quality_"): t for n, t in tables.items() if n.startswith("quality_")}
        ends = [tables.get("energy_gross" + suffix) for suffix in (LOW_SUFFIX, HIGH_SUFFIX)]
        bands = (ends[0], ends[1]) if ends[0] is not None and ends[1] is not None else None
        images += plots.energy_quality(
            tables["energy_gross"], quality, folders[PLOTS] / "energy_quality.png", sources, bands
        )
    sections = _sections(tables, titles, failed)
    files += images
    if RATING_TABLE in tables:  # a label per rated run, kept out of the summaries: one per run
        files += label.draw_all(tables[RATING_TABLE], jobs, out_dir / LABELS)
    files.append(write_markdown(out_dir / "summary.md", heading, notes, sections, images))
    files.append(write_html(out_dir / "summary.html", heading, notes, sections, images))
    (out_dir / MANIFEST).write_text("".join(f"{f.relative_to(out_dir)}\n" for f in files))
    return files


def _remove_previous(out_dir: Path) -> None:
    """The files an earlier aggregation wrote here (its manifest lists them), so that no stale table or
    plot stays beside the new ones; nothing else in the folder is touched."""
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return
    for line in manifest.read_text().splitlines():
        path = (out_dir / line).resolve()
        if path.is_relative_to(out_dir.resolve()) and path.is_file():
            path.unlink()
