"""The shipped reference tables (ecopipe/data) are well formed, dated, sourced and on one basis each."""

from __future__ import annotations

import re

import pytest

from tests.reference.conftest import rows

# file -> {value column: (low, high)}: plausible ranges; a row with a value must also have a year.
RANGES = {
    "grid_carbon_intensity": {"gco2e_per_kwh": (0, 1400)},
    "grid_carbon_intensity_subnational": {"gco2e_per_kwh": (0, 1000)},
    "cloud_regions": {
        "gco2e_per_kwh": (0, 1400),
        "pue": (1.0, 2.0),
        "wue_l_per_kwh": (0, 3),
        "ewif_l_per_kwh": (0.5, 20),
        "provider_grid_gco2e_per_kwh": (0, 1400),
    },
    "water": {"wue_onsite_l_per_kwh": (0, 3), "ewif_l_per_kwh": (0.5, 20), "pue_assumed": (1.0, 2.0)},
    "hardware": {"tdp_w": (5, 1000), "memory_gb": (1, 200), "embodied_kgco2e": (50, 2000)},
    "pue_by_tier": {"pue": (1.0, 2.5), "pue_low": (1.0, 2.5), "pue_high": (1.0, 2.5)},
}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_row_parses_with_source_and_year(name: str) -> None:
    table = rows(name)
    assert table
    for row in table:
        where = f"{name}.csv {row}"
        assert None not in row and None not in row.values(), f"wrong field count: {where}"
        assert row["source"].strip(), f"no source: {where}"
        year = row["year"].strip()
        assert year == "" or 2000 <= int(year) <= 2026, where
        has_value = False
        for column, (low, high) in RANGES[name].items():
            if row[column].strip():
                assert low <= float(row[column]) <= high, f"{column} out of range: {where}"
                has_value = True
        # PUE 1.0 outside a data centre is a convention, not a dated measurement.
        if has_value and not row["source"].startswith("Convention"):
            assert year, f"value without a year: {where}"


def test_only_device_tiers_are_undated_conventions() -> None:
    undated = [r["tier"] for r in rows("pue_by_tier") if r["source"].startswith("Convention")]
    assert undated == ["desktop", "edge", "mobile"]


# Who published each figure: a PUE row's source must open with one of them.
PRIMARY_PUBLISHERS = (
    "Google 20",  # Google Environmental Report <year>
    "AWS",  # AWS / Amazon sustainability pages and reports
    "Meta 20",  # Meta Sustainability Report <year>
    "IDC,",
    "Uptime Institute",
    "Equinix 20",  # Equinix Sustainability Report <year>
    "LBNL",
    "Convention",  # desktop/edge/mobile: no facility, no publisher
)
# Secondary outlets: a cell that names one must say the figure was not read in the primary text.
SECONDARY = ("Statista", "TechCrunch", "DatacenterDynamics", "DeepNewz", "hyperscalers.news", "getcoai")
NOT_READ = "figure not read in the primary text here"


def test_every_pue_row_cites_its_primary_publisher() -> None:
    for r in rows("pue_by_tier"):
        source = r["source"]
        assert source.startswith(PRIMARY_PUBLISHERS), f"no primary publisher first: {source}"
        if any(outlet in source for outlet in SECONDARY):
            assert NOT_READ in source, f"a secondary outlet's figure passed as read: {source}"
    # The old Microsoft row cited DatacenterDynamics only (an article about AWS): it is gone.
    assert not any(r["scope"].startswith("Microsoft") for r in rows("pue_by_tier"))


def test_aws_pue_years() -> None:
    """AWS reported 1.15 for 2022, 2023 and 2024 and 1.14 for 2025; each row quotes its own year."""
    aws = [r for r in rows("pue_by_tier") if r["scope"] == "AWS global"]
    assert {int(r["year"]): float(r["pue"]) for r in aws} == {2022: 1.15, 2023: 1.15, 2024: 1.15, 2025: 1.14}
    assert len(aws) == 4
    for r in aws:
        assert f"{r['year']} PUE {r['pue']}" in r["source"] or f"In {r['year']}," in r["source"], r["source"]
        other_years = {"2022", "2023", "2024", "2025"} - {r["year"]}
        assert not any(f"In {y}, AWS" in r["source"] for y in other_years), r["source"]


def test_grid_table_covers_the_world_on_one_basis() -> None:
    grid = rows("grid_carbon_intensity")
    zones = [r["zone"] for r in grid]
    assert len(zones) == len(set(zones)) == 216
    assert sum(bool(re.fullmatch(r"[A-Z]{3}", z)) for z in zones) >= 100
    world = next(r for r in grid if r["zone"] == "WORLD")
    assert (float(world["gco2e_per_kwh"]), world["year"]) == (473.01, "2024")
    assert {r["basis"] for r in grid} == {"lifecycle"}
    assert all(r["basis"].startswith("direct") for r in rows("grid_carbon_intensity_subnational"))


def test_cloud_carbon_is_the_lifecycle_country_value() -> None:
    grid = {r["zone"]: r for r in rows("grid_carbon_intensity")}
    cloud = rows("cloud_regions")
    assert len(cloud) == 153
    for r in cloud:
        assert float(r["gco2e_per_kwh"]) == float(grid[r["zone"]]["gco2e_per_kwh"]), r["region"]
