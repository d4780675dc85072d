"""MLflow filter strings evaluated on a runs frame as the store would evaluate them, for the SQL reader
(load.py), which reads the selected runs' tables and then keeps the runs the filter matches.

`Filter.check_supported` raises UnsupportedFilter on a clause the frame cannot evaluate exactly as
MLflow would (datasets, unusual attributes); load.py then reads through `search_runs`, whose store
applies the filter itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
from mlflow.utils.search_utils import SearchUtils


class UnsupportedFilter(ValueError):
    """A clause the frame cannot evaluate exactly as MLflow would."""


_ATTRIBUTE_ALIASES = {"run name": "run_name", "Run name": "run_name", "Run Name": "run_name"}
_ATTRIBUTE_ALIASES |= {"created": "start_time", "Created": "start_time"}
_STRING_ATTRIBUTES = {"run_id", "run_name", "status", "user_id"}
_NUMERIC_ATTRIBUTES = {"start_time", "end_time"}
_COLUMN_PREFIX = {"metric": "metrics.", "parameter": "params.", "tag": "tags."}
_NUMERIC_COMPARATORS = {"=", "!=", ">", ">=", "<", "<="}
_COMPARATORS = {
    "metric": _NUMERIC_COMPARATORS,
    "parameter": {"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"},
    "tag": {"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"},
    "string_attribute": {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"},
    "numeric_attribute": _NUMERIC_COMPARATORS,
}


@dataclass(frozen=True)
class Filter:
    """A parsed MLflow filter string: clauses joined by AND, as MLflow allows."""

    clauses: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, filter_string: str | None) -> Filter:
        return cls(SearchUtils.parse_search_filter(filter_string) if filter_string else [])

    def keys(self, kind: str) -> set[str]:
        return {c["key"] for c in self.clauses if c["type"] == kind}

    def check_supported(self) -> None:
        for clause in self.clauses:
            kind, key = clause["type"], clause["key"]
            if kind == "attribute":
                key = _ATTRIBUTE_ALIASES.get(key, key)
                if key in _STRING_ATTRIBUTES:
                    kind = "string_attribute"
                elif key in _NUMERIC_ATTRIBUTES:
                    kind = "numeric_attribute"
                else:
                    raise UnsupportedFilter(f"attribute {key}")
            if clause["comparator"] not in _COMPARATORS.get(kind, ()):
                raise UnsupportedFilter(f"{kind} {key} {clause['comparator']}")

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        keep = pd.Series(True, index=frame.index)
        for clause in self.clauses:
            keep &= _clause_mask(frame, clause)
        return keep


def _like(pattern: str, case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile(regex, re.DOTALL | (0 if case else re.IGNORECASE))


def _compare(column: pd.Series, comparator: str, value: object) -> pd.Series:
    present = column.notna()
    if comparator == "IS NULL":
        return ~present
    if comparator == "IS NOT NULL":
        return present
    if comparator in ("IN", "NOT IN"):
        inside = column.isin(list(value))  # type: ignore[call-overload]
        return present & (inside if comparator == "IN" else ~inside)
    if comparator in ("LIKE", "ILIKE"):
        pattern = _like(str(value), case=comparator == "LIKE")
        return present & column.map(lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None)
    ops = {
        "=": column.__eq__,
        "!=": column.__ne__,
        ">": column.__gt__,
        ">=": column.__ge__,
        "<": column.__lt__,
        "<=": column.__le__,
    }
    if comparator not in ops:
        raise UnsupportedFilter(comparator)
    # A run without the metric, tag or param never matches, as in MLflow's inner join.
    return present & ops[comparator](value).fillna(False).astype(bool)


def _clause_mask(frame: pd.DataFrame, clause: dict) -> pd.Series:
    kind, key, comparator, value = clause["type"], clause["key"], clause["comparator"], clause["value"]
    if kind == "attribute":
        key = _ATTRIBUTE_ALIASES.get(key, key)
        column = frame[key]
        if key in _NUMERIC_ATTRIBUTES:
            column, value = column.astype("float64"), float(value)
        return _compare(column, comparator, value)
    name = _COLUMN_PREFIX[kind] + key
    column = frame[name] if name in frame else pd.Series(pd.NA, index=frame.index, dtype="object")
    if kind == "metric":
        column, value = column.astype("float64"), float(value)
    return _compare(column, comparator, value)
