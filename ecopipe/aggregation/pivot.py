"""A table's cells and its wide form: each cell's figure, or text saying why it has none, pivoted into a
row per row key and a column per hardware in display order, and read back (its key columns, its cells
as numbers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecopipe.aggregation.rows import COMPLETE, ENERGY
from ecopipe.config import Precision

_PRECISION_ORDER = {p.value: i for i, p in enumerate(Precision)}
NOT_LOGGED = "not logged"  # a FINISHED run without the figure: an older schema, a stage that failed
NOT_DEFINED = "not defined"
KEYS = "keys"  # a table's attrs entry: its row key columns; its other columns are hardware


def figure(cells: pd.DataFrame, metric: str, undefined: str | None = None) -> pd.Series:
    """Each cell's run's `metric`; where the run has none, why: "not defined" where its `undefined` tag
    column says so (ESS over a CO2e <= 0), else NOT_LOGGED."""
    values = cells[metric] if metric in cells else pd.Series(np.nan, index=cells.index)
    if values.notna().all():
        return values
    why = pd.Series(NOT_LOGGED, index=cells.index)
    if undefined is not None:
        why = why.mask(cells[undefined].fillna("").astype("str").str.startswith(NOT_DEFINED), NOT_DEFINED)
    return values.astype("object").where(values.notna(), why)


def sort_rows(frame: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """Precisions from fp32 down, complete energy first, numbers (a batch size, a config key's values)
    by value, then text."""

    def key(column: pd.Series) -> pd.Series:
        if column.name == "precision":
            return column.map(lambda p: (_PRECISION_ORDER.get(p, len(_PRECISION_ORDER)), p))
        if column.name == ENERGY:
            return column.map(lambda e: (e != COMPLETE, e))
        values = pd.to_numeric(column, errors="coerce")
        return pd.Series(
            [(0, v, "") if pd.notna(v) else (1, 0.0, str(t)) for v, t in zip(values, column, strict=True)],
            index=column.index,
        )

    return frame.sort_values(dims, key=key, kind="stable").reset_index(drop=True)


def pivot(cells: pd.DataFrame, dims: list[str], value: str, hardware: list[str]) -> pd.DataFrame:
    """Row key columns, then one column per hardware: every row key of `cells`, blank where the row has
    no run on that hardware."""
    wide = cells.pivot(index=dims, columns="hardware", values=value).reindex(columns=hardware)
    wide = wide.reset_index()
    wide.columns.name = None
    wide.attrs[KEYS] = list(dims)
    return sort_rows(wide, dims)


def key_columns(table: pd.DataFrame) -> list[str]:
    """A table's row key columns (pivot records them); a table without them (selection) has none."""
    return list(table.attrs.get(KEYS, ()))


def by_dataset(table: pd.DataFrame) -> pd.DataFrame:
    """ESS compares only within one data set: its rows together, the data set the first key."""
    keys = key_columns(table)
    if "dataset" not in keys:
        return table
    first = ["dataset", *(k for k in keys if k != "dataset")]
    ordered = table.sort_values("dataset", kind="stable")[[*first, *(c for c in table if c not in keys)]]
    ordered = ordered.reset_index(drop=True)
    ordered.attrs[KEYS] = first
    return ordered


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's cells as floats; text such as "not defined" becomes NaN."""
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64")
