"""Shared by the job's tests (ecopipe/job.py): the bounds an estimated window's energy must lie within."""

from __future__ import annotations


def between(joules: float, seconds: float, low_w: float, high_w: float) -> bool:
    return low_w * seconds * (1 - 1e-9) <= joules <= high_w * seconds * (1 + 1e-9)
