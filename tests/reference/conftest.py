"""Shared by reference.py's tests: the shipped tables' rows, read as plain CSV text.

Expected values in these tests were read by hand from the CSV text in ecopipe/data and are hard-coded
on purpose: a loader that picked the wrong row or column would otherwise pass.
"""

from __future__ import annotations

import csv
from importlib.resources import files


def rows(name: str) -> list[dict[str, str]]:
    text = files("ecopipe.data").joinpath(f"{name}.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))
