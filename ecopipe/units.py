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


# A rate below one per second reads per minute, then per hour: "621 m inferences/s" read as millions.
_RATE_SPANS = ((1.0, "s"), (60.0, "min"), (3600.0, "h"))


def rate_span(per_s: float | None) -> tuple[float, str]:
    """The time span a rate reads best in: the shortest in which at least one event happens."""
    if per_s is None or not math.isfinite(per_s) or per_s <= 0:
        return _RATE_SPANS[0]
    return next(((s, name) for s, name in _RATE_SPANS if per_s * s >= 1), _RATE_SPANS[-1])


def rate(per_s: float | None, noun: str = "", span: tuple[float, str] | None = None) -> str:
    """`450000, "inferences"` -> `450 k inferences/s`; `0.621` -> `37.3 inferences/min`; never a milli
    prefix on a rate. `span` writes it in a given span (a CI in its figure's)."""
    if per_s is None or not math.isfinite(per_s):
        return ""
    seconds, name = span or rate_span(per_s)
    count = per_s * seconds
    text = eng(count) if abs(count) >= 1 else f"{count:.{SIGNIFICANT}g}"  # no milli prefix, ever
    return f"{text} {noun}/{name}" if noun else f"{text}/{name}"


def percent(fraction: float | None, digits: int = 3) -> str:
    """`0.2345` -> `23.4%`."""
    if fraction is None or not math.isfinite(fraction):
        return ""
    return f"{float(f'{fraction * 100:.{digits}g}'):g}%"
