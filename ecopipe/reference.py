"""Sourced constants for turning measured energy into CO2e and water.

Every number comes from a CSV in ``ecopipe/data`` (see its README.md for sources and caveats) and is
returned as a :class:`Factor` carrying its citation and year, so a report can always say where a figure
came from. Nothing here invents a value: blank cells stay ``None``.

Rules, chosen so that a lookup is deterministic and the carbon basis is never mixed silently:

* Carbon: countries, ``WORLD`` and ``EU27`` come from the lifecycle table; US states and Chinese provinces
  from the subnational table, whose "direct" basis is passed on in ``RegionFactors.carbon_basis``. The
  subnational eGRID national row (zone ``US``) is not reachable: ``US`` is the ISO alpha-2 code of ``USA``.
* EWIF (water per kWh generated), one row per zone from ``water.csv``: Li et al. first (USA: 3.142, the
  figure of the water formula we use), then WRI 2020 (WORLD: 4.81, countries); the LBNL, EcoLogits
  ``WOR`` and Green Grid rows are never picked. A zone without a row falls back to its country (US
  states -> USA, Chinese provinces -> CHN), then to WORLD; the Factor's source says which fallback.
* Cloud regions take carbon, PUE, WUE and EWIF from their ``cloud_regions.csv`` row (carbon is the
  lifecycle value of the region's country). A blank EWIF falls back to the zone rule above; a blank
  PUE/WUE stays ``None`` so the caller applies the hardware tier's default.
* PUE: a tier's point comes from one ``pue_by_tier.csv`` row (``_PUE_ROW``) and its range from a set of
  that tier's rows (``_PUE_RANGE``); see :func:`tier_pue`. A cloud region's own PUE and a user override
  carry no range.
* Water basis: every water Factor says whether it counts water "consumption" (evaporated, not returned)
  or "withdrawal" (taken in, part of it returned), or ``None`` where its source does not say. The two are
  never added without a flag: :func:`water_basis` names the basis of a WUE + EWIF pair, "MIXED: ..." when
  they differ.
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

__all__ = [
    "TIERS",
    "Factor",
    "RegionFactors",
    "UnknownRegionError",
    "known_regions",
    "resolve_region",
    "table",
    "tier_pue",
    "tier_wue",
    "water_basis",
    "year_of",
]


WATER_BASES = ("consumption", "withdrawal")


@dataclass(frozen=True)
class Factor:
    """One sourced constant, with an optional sourced range and, for water factors, its basis.

    ``low``/``high`` (both or neither) bound ``value`` when the tables give a spread for it: for a tier's
    default PUE, the lowest and highest figure among the tier's ``pue_by_tier.csv`` rows picked by
    ``_PUE_RANGE`` (see :func:`tier_pue`). ``None``: no range known (a cloud region's own PUE, a user
    override, carbon and water factors). ``basis`` is for water factors only: "consumption",
    "withdrawal", or ``None`` when the source does not say; other factors leave it ``None``.
    """

    value: float
    source: str  # citation text from the table, or "override" when the user set the value
    year: int | None
    low: float | None = None
    high: float | None = None
    basis: str | None = None

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError(f"Factor range needs both low and high, got low={self.low}, high={self.high}")
        if self.low is not None and not self.low <= self.value <= self.high:
            raise ValueError(f"Factor value {self.value} outside its range {self.low}-{self.high}")
        if self.basis is not None and self.basis not in WATER_BASES:
            raise ValueError(f"Unknown water basis {self.basis!r}; allowed: {', '.join(WATER_BASES)} or None")


@dataclass(frozen=True)
class RegionFactors:
    """Everything the impact stage needs about where the electricity came from."""

    region: str  # canonical zone: "WORLD", "FRA", "US-CA", "aws/us-east-1"
    name: str
    carbon_intensity: Factor  # gCO2e/kWh
    carbon_basis: str  # "lifecycle" or "direct (...)", from the table
    pue: Factor | None  # cloud regions only; for a grid zone the PUE comes from the hardware tier
    wue: Factor | None  # on-site L/kWh (IT energy), cloud regions only
    ewif: Factor  # L/kWh of electricity generated


class UnknownRegionError(ValueError):
    """The region string matches no zone, country code or cloud region."""


# ---------------------------------------------------------------- tables


@cache  # = functools.lru_cache(maxsize=None)
def table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of ``ecopipe/data/<name>.csv`` as dicts of stripped strings (blank cells are "")."""
    text = files("ecopipe.data").joinpath(f"{name}.csv").read_text(encoding="utf-8")
    return tuple({k: v.strip() for k, v in row.items()} for row in csv.DictReader(text.splitlines()))


def year_of(cell: str) -> int | None:
    """A year cell as an int ("2024" or "2024.0" -> 2024); None when blank."""
    return int(float(cell)) if cell else None


def _year_in(text: str) -> int | None:
    """First 4-digit year in a scope/citation text ("region 2024" -> 2024; "year n/s" -> None)."""
    m = re.search(r"\b(19|20)\d{2}\b", text)
    return int(m.group()) if m else None


# ---------------------------------------------------------------- regions

_PROVIDER_NAMES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}
_COUNTRY_OF = {"US": "USA", "CN": "CHN"}  # subnational prefix -> country, for the EWIF fallback
_FORMS = (
    "'WORLD', 'EU27', an ISO 3166 alpha-3 or alpha-2 country code ('FRA', 'FR'), a US state or Chinese "
    "province ('US-CA', 'CN-GD'), or a cloud region as provider/region ('aws/us-east-1', "
    "'gcp/europe-west1', 'azure/westeurope')"
)


@cache  # = functools.lru_cache(maxsize=None)
def _grid() -> dict[str, dict[str, str]]:
    """Canonical zone -> row, for the lifecycle and subnational tables (subnational "US" left out)."""
    zones = {r["zone"]: r for r in table("grid_carbon_intensity")}
    zones.update({r["zone"]: r for r in table("grid_carbon_intensity_subnational") if "-" in r["zone"]})
    return zones


@cache  # = functools.lru_cache(maxsize=None)
def _cloud() -> dict[str, dict[str, str]]:
    return {f"{r['provider']}/{r['region']}".lower(): r for r in table("cloud_regions")}


@cache  # = functools.lru_cache(maxsize=None)
def _aliases() -> dict[str, str]:
    """Upper-cased accepted spelling -> canonical name (canonical names, alpha-2 codes, cloud regions)."""
    out = {z.upper(): z for z in _grid()}
    for r in table("grid_carbon_intensity"):
        if r["zone_alpha2"]:
            out[r["zone_alpha2"].upper()] = r["zone"]
    out.update({key.upper(): key for key in _cloud()})
    return out


def known_regions() -> list[str]:
    """Every canonical region name resolve_region accepts (aliases such as "FR" not repeated)."""
    return sorted(_grid()) + sorted(_cloud())


@cache  # = functools.lru_cache(maxsize=None)
def _ewif_rows() -> dict[str, dict[str, str]]:
    """One EWIF row per zone: Li et al. before WRI 2020; other rows (LBNL, EcoLogits WOR, ...) ignored."""
    picked: dict[str, dict[str, str]] = {}
    for prefix in ("Li, Yang, Islam, Ren", "WRI 2020"):
        for r in table("water"):
            if r["ewif_l_per_kwh"] and r["source"].startswith(prefix):
                picked.setdefault(r["zone_or_scope"], r)
    return picked


def _basis(cell: str, column: str) -> str | None:
    """The water basis a ``water_basis``/``*_basis`` cell gives for ``column`` ("wue" or "ewif").

    A cell is "consumption", "withdrawal", blank (not stated), or per column "wue: withdrawal / ewif:
    consumption"; anything else is an error, so a new wording in the tables cannot pass as a basis.
    """
    parts = dict(p.split(": ", 1) for p in cell.split(" / ")) if ": " in cell else {column: cell}
    basis = parts.get(column, "").strip()
    if basis and basis not in WATER_BASES:
        raise ValueError(f"unknown water basis {cell!r} in the reference tables")
    return basis or None


def _zone_ewif(zone: str) -> Factor:
    rows = _ewif_rows()
    country = _COUNTRY_OF.get(zone.split("-")[0], zone) if "-" in zone else zone
    for candidate in (zone, country, "WORLD"):
        if candidate in rows:
            r = rows[candidate]
            note = "" if candidate == zone else f"fallback to {candidate} (no EWIF row for {zone}): "
            basis = _basis(r["water_basis"], "ewif")
            return Factor(float(r["ewif_l_per_kwh"]), note + r["source"], year_of(r["year"]), basis=basis)
    raise AssertionError("water.csv has no WORLD EWIF row")  # the data tests guard this


def _segments(source: str) -> dict[str, str]:
    """Split a cloud row's "gco2e: ... | pue: ... | ewif: ..." citation into its parts."""
    return dict(part.split(": ", 1) for part in source.split(" | ") if ": " in part)


def _cloud_factors(key: str, r: dict[str, str]) -> RegionFactors:
    seg = _segments(r["source"])
    grid = _grid()[r["zone"]]
    carbon_source = f"{seg['gco2e']}; zone {r['zone']} ({seg['region->zone']})"
    carbon = Factor(float(r["gco2e_per_kwh"]), carbon_source, year_of(r["year"]))
    pue = wue = None
    if r["pue"]:
        pue = Factor(float(r["pue"]), f"{seg['pue']} [{r['pue_scope']}]", year_of(r["pue_year"]))
    if r["wue_l_per_kwh"]:
        wue_source = f"{seg['wue']} [{r['wue_scope']}]"
        wue = Factor(
            float(r["wue_l_per_kwh"]),
            wue_source,
            _year_in(r["wue_scope"]),
            basis=_basis(r["wue_basis"], "wue"),
        )
    if r["ewif_l_per_kwh"]:
        ewif_basis = _basis(r["ewif_basis"], "ewif")
        ewif = Factor(float(r["ewif_l_per_kwh"]), seg["ewif"], _year_in(seg["ewif"]), basis=ewif_basis)
    else:
        ewif = _zone_ewif(r["zone"])  # the country: water.csv has no rows for subzones
    name = f"{_PROVIDER_NAMES.get(r['provider'], r['provider'])} {r['region']} ({r['location']})"
    return RegionFactors(key, name, carbon, grid["basis"], pue, wue, ewif)


@cache  # = functools.lru_cache(maxsize=None)
def resolve_region(region: str) -> RegionFactors:
    """Carbon, PUE/WUE and EWIF for a zone, country code or ``provider/region``; see the module rules."""
    canonical = _aliases().get(region.strip().upper())
    if canonical is None:
        raise UnknownRegionError(_unknown_message(region))
    if "/" in canonical:
        return _cloud_factors(canonical, _cloud()[canonical])
    r = _grid()[canonical]
    carbon = Factor(float(r["gco2e_per_kwh"]), r["source"], year_of(r["year"]))
    return RegionFactors(canonical, r["name"], carbon, r["basis"], None, None, _zone_ewif(canonical))


def _unknown_message(region: str) -> str:
    # Match on codes and on human names ("Frence" -> FRA), then report canonical names.
    names = {k.lower(): v for k, v in _aliases().items()}
    names.update({r["name"].lower(): z for z, r in _grid().items()})
    nearest: list[str] = []
    for hit in difflib.get_close_matches(region.strip().lower(), names, n=20, cutoff=0.5):
        if names[hit] not in nearest:
            nearest.append(names[hit])
    suggestion = ", ".join(nearest[:5]) or "none"
    return (
        f"Unknown region {region!r}. Accepted forms: {_FORMS}. Nearest valid names: {suggestion}. "
        "ecopipe.reference.known_regions() lists them all."
    )


# ---------------------------------------------------------------- tiers

TIERS = ("hyperscale", "datacenter", "colocation", "server_room", "desktop", "edge", "mobile")

# tier -> (pue_by_tier.csv tier, start of its scope, year): the row of the tier's point value, the data
# README's recommended defaults.
_PUE_ROW = {
    "hyperscale": ("hyperscale_cloud", "AWS global", "2024"),
    "datacenter": ("enterprise_datacenter", "Uptime Institute", "2024"),
    "colocation": ("colocation", "Equinix", "2023"),
    "server_room": ("on_prem_server_room", "", "2013"),
    "desktop": ("desktop", "", ""),
    "edge": ("edge", "", ""),
    "mobile": ("mobile", "", ""),
}

# tier -> starts of the scopes whose rows (same pue_by_tier.csv tier as _PUE_ROW) make its range; () = all
# of the tier's rows. Hyperscale takes the operators' own fleet figures only (Google, AWS, Meta), not
# IDC's public-cloud industry average, which covers clouds at large; every other tier takes all its rows
# (datacenter: Uptime's annual survey averages and IDC's on-premises figure).
_PUE_RANGE: dict[str, tuple[str, ...]] = {
    "hyperscale": ("Google", "AWS", "Meta"),
    "datacenter": (),
    "colocation": (),
    "server_room": (),
    "desktop": (),
    "edge": (),
    "mobile": (),
}


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"Unknown hardware tier {tier!r}; allowed tiers: {', '.join(TIERS)}.")


def _pue_row(tier: str) -> dict[str, str]:
    table_tier, scope, year = _PUE_ROW[tier]
    for r in table("pue_by_tier"):
        if r["tier"] == table_tier and r["year"] == year and r["scope"].startswith(scope):
            return r
    raise AssertionError(f"pue_by_tier.csv lost its {table_tier} row")  # the data tests guard this


def _pue_range(tier: str) -> tuple[float, float]:
    """Lowest and highest PUE among the tier's ``_PUE_RANGE`` rows (their pue, pue_low and pue_high cells)."""
    table_tier, prefixes = _PUE_ROW[tier][0], _PUE_RANGE[tier]
    figures = [
        float(cell)
        for r in table("pue_by_tier")
        if r["tier"] == table_tier and (not prefixes or r["scope"].startswith(prefixes))
        for cell in (r["pue"], r["pue_low"], r["pue_high"])
        if cell
    ]
    if not figures:
        raise AssertionError(f"pue_by_tier.csv has no {table_tier} rows for a range")  # data tests guard this
    return min(figures), max(figures)


def tier_pue(tier: str) -> Factor:
    """Default PUE of a hardware tier (used when the region is not a cloud region), with a sourced range.

    Point: the tier's ``_PUE_ROW`` row of ``pue_by_tier.csv`` (server rooms: the midpoint of LBNL's
    measured 1.5-2.1, labelled a derived assumption). Range (``low``/``high``): the lowest and highest
    figure among the tier's ``_PUE_RANGE`` rows of the same table, so it moves with the table:
    hyperscale = the operators' own fleet figures (Google, AWS, Meta; not IDC's public-cloud industry
    average), datacenter = Uptime's annual survey averages and IDC's on-premises figure, colocation =
    Equinix's annual averages, server room = LBNL's measured 1.5-2.1, desktop/edge/mobile = 1.0-1.0.
    """
    _check_tier(tier)
    r = _pue_row(tier)
    low, high = _pue_range(tier)
    if r["pue"]:
        source = r["source"]
        if source.startswith("Convention (as above)"):  # edge/mobile rows point at the desktop row
            source = _pue_row("desktop")["source"]
        return Factor(float(r["pue"]), source, year_of(r["year"]), low, high)
    # Server rooms: LBNL measured a range, not a typical value; take its midpoint and say so.
    lbnl_low, lbnl_high = float(r["pue_low"]), float(r["pue_high"])
    measured = f"{lbnl_low}-{lbnl_high}"
    source = f"derived assumption, not a published value: midpoint of measured {measured}; {r['source']}"
    return Factor(round((lbnl_low + lbnl_high) / 2, 3), source, year_of(r["year"]), low, high)


def tier_wue(tier: str) -> Factor:
    """Default on-site WUE (L per IT kWh) of a tier, used when the region gives none."""
    _check_tier(tier)
    if tier in ("hyperscale", "datacenter", "colocation"):
        r = _ewif_rows()["USA"]  # the Li et al. row (see _ewif_rows)
        source = f"Li et al. U.S.-average on-site WUE used as the data-centre default: {r['source']}"
        basis = _basis(r["water_basis"], "wue")
        return Factor(float(r["wue_onsite_l_per_kwh"]), source, year_of(r["year"]), basis=basis)
    # No basis: zero on-site water is the same under either, and no source states one (see water_basis).
    source = f"no evaporative cooling outside a data centre; {_pue_row('desktop')['source']}"
    return Factor(0.0, source, None)


def water_basis(wue: Factor, ewif: Factor) -> str:
    """The basis of the water figure ``E_IT * (WUE + PUE * EWIF)``, for the summary to show.

    "consumption" or "withdrawal" when the on-site WUE and the EWIF agree; "unknown" when neither says;
    otherwise "MIXED: on-site WUE <basis>, EWIF <basis>" (a missing basis reads "unknown"), so a sum of
    withdrawal and consumption is never passed off as either. An on-site WUE of 0 adds no water, so it
    cannot mix: the EWIF's basis is the answer.
    """
    onsite, offsite = wue.basis or "unknown", ewif.basis or "unknown"
    if wue.value == 0:
        return offsite
    if onsite == offsite:
        return onsite
    return f"MIXED: on-site WUE {onsite}, EWIF {offsite}"
