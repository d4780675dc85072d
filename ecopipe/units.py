"""Numbers as people read them: engineering notation with SI prefixes (29.4 mJ, 6.03 µg, 450 k/s).

One formatter for the job summary, the aggregate tables and the plots, so a quantity reads in one unit
everywhere: energy in J, CO2e in g, water in L, each with the prefix its magnitude calls for.
"""

from __future__ import annotations

import math

from matplotlib.ticker import EngFormatter

SIGNIFICANT = 3


def eng(value: float | None, unit: str = "", digits: int = SIGNIFICANT) -> str:
    """`0.02944, "J"` -> `29.4 mJ`; NaN or None -> empty string."""
    if value is None or not math.isfinite(value):
        return ""
    rounded = float(f"{value:.{digits}g}")  # EngFormatter prints its mantissa with %g
    text = EngFormatter(unit=unit, places=None, sep=" ", usetex=False, useMathText=False)(rounded)
    return text.strip().replace("\u2212", "-")  # an ASCII minus: the text lands in CSV and terminals


def eng_range(low: float | None, high: float | None, unit: str = "", digits: int = 2) -> str:
    """`0.013, 0.022, "J"` -> `13–22 mJ`: a band's ends, the prefix and unit once where they share it."""
    ends = [eng(low, unit, digits), eng(high, unit, digits)]
    if not all(ends):
        return ""
    parts = [e.rpartition(" ") if " " in e else (e, "", "") for e in ends]
    if parts[0][2] == parts[1][2] and parts[0][2]:
        return f"{parts[0][0]}–{parts[1][0]} {parts[0][2]}"
    return f"{ends[0]}–{ends[1]}"


def percent(fraction: float | None, digits: int = 3) -> str:
    """`0.2345` -> `23.4%`."""
    if fraction is None or not math.isfinite(fraction):
        return ""
    return f"{float(f'{fraction * 100:.{digits}g}'):g}%"
