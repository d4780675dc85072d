"""What SPECpower says one hardware thread of an identified CPU microarchitecture draws.

Per-microarchitecture SPECpower coefficients with a band (ecopipe/data/cpu_power_specpower.csv, rebuilt
by scripts/derive_cpu_power.py): watts per hardware thread at active idle and at 100 % load, for a key
of ecopipe.cpu_identity, the union of a "<key>+" set's members, or the vendor's server range; and CCF's
linear model between the two.
"""

from __future__ import annotations

import dataclasses
import statistics

from ecopipe.cpu_identity import CpuIdentity, coefficient_rows, plus_members, set_words

__all__ = ["CpuPowerCoefficients", "cpu_power_coefficients", "power_per_thread_w"]

VENDOR_RANGE = {"intel": "range:intel", "amd": "range:amd", "arm": "range:all", "unknown": "range:all"}


@dataclasses.dataclass(frozen=True)
class CpuPowerCoefficients:
    label: str  # "Cascade Lake (SPECpower, 69 results)" / "Intel server range (microarchitecture unknown)"
    known: bool  # False when the band is a vendor (or all-server) range
    idle_w: tuple[float, float, float]  # (low, point, high) W per hardware thread at active idle
    full_w: tuple[float, float, float]  # (low, point, high) W per hardware thread at 100% load
    memory_gb_per_thread: float  # median of the results' Total Memory / Total Threads
    results: int  # SPECpower results behind it
    source: str  # citation: CCF repo file(s), commit, SPECpower file date


def _from_row(row: dict[str, str]) -> CpuPowerCoefficients:
    def band(prefix: str) -> tuple[float, float, float]:
        return tuple(float(row[f"{prefix}_{end}"]) for end in ("low", "point", "high"))  # type: ignore[return-value]

    return CpuPowerCoefficients(
        label=row["label"],
        known=row["known"] == "true",
        idle_w=band("idle_w"),
        full_w=band("full_w"),
        memory_gb_per_thread=float(row["memory_gb_per_thread"]),
        results=int(row["results"]),
        source=row["source"],
    )


def _union(label: str, members: list[CpuPowerCoefficients]) -> CpuPowerCoefficients:
    def band(which: str) -> tuple[float, float, float]:
        bands = [getattr(m, which) for m in members]
        return (min(b[0] for b in bands), statistics.fmean(b[1] for b in bands), max(b[2] for b in bands))

    sources = list(dict.fromkeys(m.source for m in members))
    return CpuPowerCoefficients(
        label=label,
        known=all(m.known for m in members),
        idle_w=band("idle_w"),
        full_w=band("full_w"),
        memory_gb_per_thread=statistics.median(m.memory_gb_per_thread for m in members),
        results=sum(m.results for m in members),
        source="; ".join(sources),
    )


def cpu_power_coefficients(identity: CpuIdentity) -> CpuPowerCoefficients:
    """SPECpower watts per thread for the identified microarchitecture, or its vendor's server range.

    A key with a SPECpower family gets that family's band; "<key>+" the union of its members' bands
    (low = min of lows, high = max of highs, point = mean of points) when every member has a family;
    anything else its vendor's server range (known=False).
    """
    rows = coefficient_rows()
    key = identity.microarch
    vendor_range = _from_row(rows[VENDOR_RANGE.get(identity.vendor, "range:all")])
    if key is not None and key.endswith("+"):
        members = [_from_row(rows[k]) for k in plus_members(key[:-1])]
        if members and all(m.known for m in members):
            results = sum(m.results for m in members)
            return _union(f"{set_words(key)} (SPECpower, {results} results)", members)
        label = f"{set_words(key)}: not all have a SPECpower family; {vendor_range.label}"
        return dataclasses.replace(vendor_range, label=label)
    if key is not None and key in rows:
        return _from_row(rows[key])
    return vendor_range


def power_per_thread_w(coefficients: CpuPowerCoefficients, utilisation: float) -> tuple[float, float, float]:
    """CCF's linear model, idle + u * (full - idle), on each of (low, point, high); u clamped to [0, 1]."""
    u = min(max(float(utilisation), 0.0), 1.0)
    return tuple(  # type: ignore[return-value]
        idle + u * (full - idle) for idle, full in zip(coefficients.idle_w, coefficients.full_w, strict=True)
    )
