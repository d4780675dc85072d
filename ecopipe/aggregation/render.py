"""Tables as files: numeric CSV (one per table, the energy sources in their own), and a Markdown and an
HTML summary where every energy-derived figure carries its source, e.g. `12.3 ±0.4 (nvml_counter+rapl)`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ecopipe.aggregation import plots
from ecopipe.aggregation.tables import GAIN_TABLE, SOURCE_TABLE, SPECS

_ENERGY = {spec.name for spec in SPECS if spec.energy}
ERROR_CHARS = 300  # of an error in the summaries; failed.csv keeps it whole
FAILED_TITLE = "Failed jobs (FAILED or KILLED; superseded: a later run of the same config finished)"


def _number(value: object, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def display(name: str, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A table's cells as text: the value, its 95% CI where known, and for energy figures the source."""
    frame = tables[name]
    keys = plots.key_columns(frame)
    out = frame[keys].astype("str").copy()
    ci95 = tables.get(f"{name}_ci95")
    sources = tables.get(SOURCE_TABLE) if name in _ENERGY else None

    def lookup(other: pd.DataFrame | None) -> pd.DataFrame | None:
        if other is None:
            return None
        return frame[keys].astype("str").merge(other.astype({k: "str" for k in keys}), on=keys, how="left")

    ci95, sources = lookup(ci95), lookup(sources)
    for column in (c for c in frame.columns if c not in keys):
        cells = []
        for i, value in enumerate(frame[column]):
            text = _number(value, 3 if name == GAIN_TABLE else 4)
            if text and ci95 is not None and column in ci95 and not pd.isna(ci95[column].iat[i]):
                text += f" ±{float(f'{ci95[column].iat[i]:.2g}'):g}"
            if text and sources is not None:
                source = sources[column].iat[i] if column in sources else None
                text += f" ({source if isinstance(source, str) else 'source unknown'})"
            cells.append(text)
        out[column] = cells
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


def _sections(
    tables: Mapping[str, pd.DataFrame], titles: Mapping[str, str], failed: pd.DataFrame
) -> list[tuple[str, pd.DataFrame]]:
    shown = [n for n in tables if n != SOURCE_TABLE and not n.endswith("_ci95")]
    sections = [(titles.get(n, n), display(n, tables)) for n in shown]
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
    parts += ["", *(f"![{image.stem}]({image.name})" for image in images)]
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
    body += [f'<img src="{html.escape(i.name)}" alt="{html.escape(i.stem)}">' for i in images]
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


def write_all(
    out_dir: Path,
    heading: str,
    notes: Sequence[str],
    tables: Mapping[str, pd.DataFrame],
    titles: Mapping[str, str],
    failed: pd.DataFrame,
    jobs: pd.DataFrame,
) -> list[Path]:
    """CSV per table, failed.csv, runs.csv (every job run read), PNG plots, summary.md and summary.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in tables.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
        files.append(out_dir / f"{name}.csv")
    failed.to_csv(out_dir / "failed.csv", index=False)
    jobs.to_csv(out_dir / "runs.csv", index=False)
    files += [out_dir / "failed.csv", out_dir / "runs.csv"]
    images = []
    if "ess" in tables:
        images.append(plots.ess_bars(tables["ess"], out_dir / "ess.png"))
    if "energy_gross" in tables:
        quality = {n.removeprefix("quality_"): t for n, t in tables.items() if n.startswith("quality_")}
        images.append(plots.energy_quality(tables["energy_gross"], quality, out_dir / "energy_quality.png"))
    images = [i for i in images if i is not None]
    sections = _sections(tables, titles, failed)
    files += images
    files.append(write_markdown(out_dir / "summary.md", heading, notes, sections, images))
    files.append(write_html(out_dir / "summary.html", heading, notes, sections, images))
    return files
