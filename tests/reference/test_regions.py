"""Regions resolve to exactly the grid, cloud and water figures of the shipped tables, or are refused."""

from __future__ import annotations

import pytest

from ecopipe.reference import Factor, UnknownRegionError, known_regions, resolve_region


def test_world() -> None:
    w = resolve_region("WORLD")
    assert (w.region, w.name, w.carbon_basis) == ("WORLD", "World", "lifecycle")
    assert (w.carbon_intensity.value, w.carbon_intensity.year) == (473.01, 2024)
    assert w.carbon_intensity.source.startswith("Ember 2025")
    assert w.pue is None and w.wue is None
    assert (w.ewif.value, w.ewif.year) == (4.81, 2020)  # WRI, not EcoLogits' 3.908
    assert w.ewif.source.startswith("WRI 2020")


@pytest.mark.parametrize("spelling", ["FRA", "fr", " Fra "])
def test_france_by_alpha3_or_alpha2(spelling: str) -> None:
    f = resolve_region(spelling)
    assert (f.region, f.name, f.carbon_basis) == ("FRA", "France", "lifecycle")
    assert f.carbon_intensity == Factor(44.18, f.carbon_intensity.source, 2024)
    assert (f.ewif.value, f.ewif.year) == (3.674, 2020)
    assert f.pue is None and f.wue is None


def test_us_alpha2_is_the_lifecycle_country_not_egrid() -> None:
    us = resolve_region("US")
    assert (us.region, us.carbon_intensity.value, us.carbon_basis) == ("USA", 383.55, "lifecycle")
    assert us.ewif.value == 3.142 and us.ewif.source.startswith("Li, Yang")  # not WRI's 3.132 nor LBNL's 4.35


def test_us_state_keeps_its_direct_basis() -> None:
    ca = resolve_region("us-ca")
    assert (ca.region, ca.name) == ("US-CA", "California")
    assert (ca.carbon_intensity.value, ca.carbon_intensity.year) == (179.06, 2023)
    assert ca.carbon_basis == "direct (combustion only, generation-based, CO2e)"
    assert "eGRID2023" in ca.carbon_intensity.source
    assert ca.ewif.value == 3.142 and ca.ewif.source.startswith("fallback to USA")


def test_chinese_province_falls_back_to_china_ewif() -> None:
    gd = resolve_region("CN-GD")
    assert (gd.carbon_intensity.value, gd.carbon_basis.split(" (")[0]) == (441.9, "direct CO2 only")
    assert gd.ewif.value == 6.006 and gd.ewif.source.startswith("fallback to CHN")


def test_eu27_falls_back_to_world_ewif() -> None:
    eu = resolve_region("eu27")
    assert (eu.region, eu.carbon_intensity.value, eu.carbon_intensity.year) == ("EU27", 237.49, 2023)
    assert eu.ewif.value == 4.81 and eu.ewif.source.startswith("fallback to WORLD")


def test_aws_us_east_1() -> None:
    r = resolve_region("AWS/US-EAST-1")
    assert (r.region, r.name) == ("aws/us-east-1", "AWS us-east-1 (N. Virginia)")
    assert (r.carbon_intensity.value, r.carbon_intensity.year, r.carbon_basis) == (383.55, 2024, "lifecycle")
    assert (r.pue.value, r.pue.year) == (1.15, 2024)
    assert (r.wue.value, r.wue.year) == (0.12, 2024)
    assert (r.ewif.value, r.ewif.year) == (2.313, 2020)  # eGRID subregion factor, not the US average
    assert "aws-wue-pue.csv" in r.pue.source and "[region 2024]" in r.pue.source


def test_gcp_europe_west1_has_no_wue() -> None:
    r = resolve_region("gcp/europe-west1")
    assert (r.region, r.name) == ("gcp/europe-west1", "GCP europe-west1 (Belgium)")
    assert (r.carbon_intensity.value, r.pue.value, r.ewif.value) == (117.58, 1.09, 2.62)
    assert r.pue.source.startswith("Google per-campus PUE 2024")
    assert r.wue is None  # blank cell: the caller applies the tier default


def test_azure_westeurope_wue_year_not_stated() -> None:
    r = resolve_region("azure/westeurope")
    assert (r.carbon_intensity.value, r.pue.value, r.pue.year) == (253.31, 1.14, 2023)
    assert (r.wue.value, r.wue.year, r.ewif.value) == (0.03, None, 3.433)


def test_cloud_region_without_ewif_uses_the_zone_fallback() -> None:
    r = resolve_region("aws/me-south-1")  # Bahrain: WRI has no factor
    assert (r.carbon_intensity.value, r.carbon_intensity.year, r.pue.value) == (902.41, 2023, 1.33)
    assert r.wue is None
    assert r.ewif.value == 4.81 and r.ewif.source.startswith("fallback to WORLD (no EWIF row for BHR)")


def test_every_known_region_resolves_to_itself() -> None:
    names = known_regions()
    assert len(names) == len(set(names)) == 216 + 81 + 153  # the eGRID national "US" row is not a region
    for name in names:
        assert resolve_region(name).region == name


@pytest.mark.parametrize(
    ("bad", "close"), [("FRANCE", "FRA"), ("aws/us-east-9", "aws/us-east-1"), ("Germny", "DEU")]
)
def test_unknown_region_names_value_and_close_matches(bad: str, close: str) -> None:
    with pytest.raises(UnknownRegionError) as err:
        resolve_region(bad)
    message = str(err.value)
    assert repr(bad) in message and close in message
    assert "alpha-2" in message and "provider/region" in message
    assert isinstance(err.value, ValueError)
