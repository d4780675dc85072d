"""Reference data: the shipped tables are well formed, and lookups return exactly the numbers in them.

Expected values were read by hand from the CSV text in ecopipe/data and are hard-coded on purpose:
a loader that picked the wrong row or column would otherwise pass.
"""

from __future__ import annotations

import csv
import re
from importlib.resources import files
from pathlib import Path

import pytest

from ecopipe import reference
from ecopipe.config import ImpactConfig
from ecopipe.hardware_table import hardware_profiles, match_hardware
from ecopipe.reference import (
    TIERS,
    WATER_BASES,
    Factor,
    UnknownRegionError,
    known_regions,
    resolve_region,
    tier_pue,
    tier_wue,
    water_basis,
)
from ecopipe.stages.impact import resolve_factors

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


def rows(name: str) -> list[dict[str, str]]:
    text = files("ecopipe.data").joinpath(f"{name}.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


# ---------------------------------------------------------------- the tables


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


# ---------------------------------------------------------------- regions


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


# ---------------------------------------------------------------- tiers


def test_tier_pue_values() -> None:
    assert {t: tier_pue(t).value for t in TIERS} == {
        "hyperscale": 1.15,
        "datacenter": 1.56,
        "colocation": 1.42,
        "server_room": 1.8,
        "desktop": 1.0,
        "edge": 1.0,
        "mobile": 1.0,
    }
    assert tier_pue("hyperscale").year == 2024 and tier_pue("hyperscale").source.startswith("AWS 2024")
    assert tier_pue("datacenter").source.startswith("Uptime Institute")
    server_room = tier_pue("server_room")
    assert server_room.source.startswith("derived assumption") and "LBNL" in server_room.source
    assert "CodeCarbon" in tier_pue("edge").source


def test_tier_pue_ranges() -> None:
    """Worked by hand from pue_by_tier.csv: hyperscale = Google 1.10/1.09, AWS 1.15 x3/1.14, Meta 1.08 (IDC's
    1.25 industry average left out); datacenter = Uptime 1.57/1.55/1.58/1.56 and IDC on-premises 1.63;
    colocation = Equinix 1.46/1.42; server room = LBNL's 1.5-2.1; device tiers 1.0."""
    assert {t: (tier_pue(t).low, tier_pue(t).high) for t in TIERS} == {
        "hyperscale": (1.08, 1.15),
        "datacenter": (1.55, 1.63),
        "colocation": (1.42, 1.46),
        "server_room": (1.5, 2.1),
        "desktop": (1.0, 1.0),
        "edge": (1.0, 1.0),
        "mobile": (1.0, 1.0),
    }
    for t in TIERS:
        f = tier_pue(t)
        assert f.low <= f.value <= f.high, t


def test_tier_pue_range_is_read_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    real = reference.table

    def table(name: str) -> tuple[dict[str, str], ...]:
        extra = {
            "tier": "hyperscale_cloud",
            "scope": "Google fleet",
            "pue": "1.30",
            "pue_low": "",
            "pue_high": "",
        }
        extra |= {"year": "2030", "source": "test row"}
        return real(name) + ((extra,) if name == "pue_by_tier" else ())

    monkeypatch.setattr(reference, "table", table)
    assert (tier_pue("hyperscale").low, tier_pue("hyperscale").high) == (1.08, 1.30)
    assert tier_pue("hyperscale").value == 1.15  # the point row is unchanged


def test_factor_range_and_basis_are_checked() -> None:
    assert Factor(1.2, "t", None) == Factor(1.2, "t", None, None, None, None)  # old calls keep working
    with pytest.raises(ValueError, match="outside its range"):
        Factor(1.2, "t", None, 1.3, 1.5)
    with pytest.raises(ValueError, match="both low and high"):
        Factor(1.2, "t", None, low=1.1)
    with pytest.raises(ValueError, match="water basis"):
        Factor(0.5, "t", None, basis="evaporation")


def test_cloud_region_pue_and_override_carry_no_range() -> None:
    cloud = resolve_region("aws/us-east-1").pue
    assert (cloud.value, cloud.low, cloud.high) == (1.15, None, None)
    forced = resolve_factors(ImpactConfig(pue=1.3), "FRA", "datacenter").pue
    assert (forced.value, forced.source, forced.low, forced.high) == (1.3, "override", None, None)
    tier = resolve_factors(ImpactConfig(), "FRA", "datacenter").pue
    assert (tier.value, tier.low, tier.high) == (1.56, 1.55, 1.63)


def test_tier_wue_values() -> None:
    assert {t: tier_wue(t).value for t in TIERS} == {
        "hyperscale": 0.55,
        "datacenter": 0.55,
        "colocation": 0.55,
        "server_room": 0.0,
        "desktop": 0.0,
        "edge": 0.0,
        "mobile": 0.0,
    }
    assert "Li et al." in tier_wue("datacenter").source and tier_wue("datacenter").year == 2023
    assert "CodeCarbon" in tier_wue("desktop").source


def test_water_factors_carry_their_basis() -> None:
    assert tier_wue("datacenter").basis == "consumption"  # Li et al.
    assert tier_wue("desktop").basis is None  # zero water: no source states a basis
    assert resolve_region("FRA").ewif.basis == "consumption"  # WRI 2020 water consumption factors
    assert resolve_region("US-CA").ewif.basis == "consumption"  # fallback to the Li et al. USA row
    aws = resolve_region("aws/us-east-1")
    assert (aws.wue.basis, aws.ewif.basis) == ("withdrawal", "consumption")
    assert resolve_region("azure/westeurope").wue.basis == "withdrawal"
    assert resolve_region("gcp/europe-west1").wue is None
    assert resolve_region("aws/me-south-1").ewif.basis == "consumption"  # WORLD fallback


def test_every_water_basis_cell_is_known() -> None:
    for r in rows("water"):
        for column in ("wue", "ewif"):
            assert reference._basis(r["water_basis"], column) in (*WATER_BASES, None), r
    for r in rows("cloud_regions"):
        assert (r["wue_basis"] in WATER_BASES) == bool(r["wue_l_per_kwh"]), r["region"]
        assert (r["ewif_basis"] == "consumption") == bool(r["ewif_l_per_kwh"]), r["region"]
    with pytest.raises(ValueError, match="unknown water basis"):
        reference._basis("as reported", "wue")


def test_water_basis_agreement_and_mixed_flag() -> None:
    ewif = resolve_region("FRA").ewif
    assert water_basis(tier_wue("datacenter"), ewif) == "consumption"
    aws = resolve_region("aws/us-east-1")
    assert water_basis(aws.wue, aws.ewif) == "MIXED: on-site WUE withdrawal, EWIF consumption"
    override = Factor(0.3, "override", None)
    assert water_basis(override, ewif) == "MIXED: on-site WUE unknown, EWIF consumption"
    withdrawal = Factor(2.0, "t", None, basis="withdrawal")
    assert water_basis(withdrawal, withdrawal) == "withdrawal"
    assert water_basis(override, Factor(3.0, "t", None)) == "unknown"
    assert water_basis(tier_wue("desktop"), ewif) == "consumption"  # zero on-site water cannot mix
    assert water_basis(Factor(0.0, "override", None), Factor(3.0, "t", None)) == "unknown"


@pytest.mark.parametrize("fn", [tier_pue, tier_wue])
def test_unknown_tier(fn) -> None:
    with pytest.raises(ValueError, match=r"'cloud'.*hyperscale, datacenter, colocation, server_room"):
        fn("cloud")


# ---------------------------------------------------------------- hardware


def test_hardware_keys_one_per_row() -> None:
    profiles = hardware_profiles()
    assert len(profiles) == len(rows("hardware")) == 39
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in profiles)
    assert {
        "h100": "NVIDIA H100 SXM 80GB",
        "h100_pcie": "NVIDIA H100 PCIe 80GB",
        "h200": "NVIDIA H200 SXM 141GB",
        "a100": "NVIDIA A100 SXM4 80GB",
        "a100_40gb": "NVIDIA A100 SXM4 40GB",
        "a100_pcie": "NVIDIA A100 PCIe 80GB",
        "l4": "NVIDIA L4",
        "t4": "NVIDIA T4",
        "v100": "NVIDIA Tesla V100 SXM2 32GB",
        "l40s": "NVIDIA L40S 48GB",
        "rtx4090": "NVIDIA GeForce RTX 4090",
        "rtx3090": "NVIDIA GeForce RTX 3090",
        "gtx1650": "NVIDIA GeForce GTX 1650",
        "jetson_orin": "NVIDIA Jetson AGX Orin 64GB",
        "xeon_8480": "Intel Xeon Platinum 8480+",
        "epyc_9654": "AMD EPYC 9654",
        "i9_13900k": "Intel Core i9-13900K",
        "ryzen_7950x": "AMD Ryzen 9 7950X",
        "apple_m2": "Apple M2",
    }.items() <= {k: p.name for k, p in profiles.items()}.items()


def test_hardware_values() -> None:
    h100 = hardware_profiles()["h100"]
    assert (h100.kind, h100.tier, h100.tdp_w, h100.memory_gb, h100.embodied_kgco2e, h100.year) == (
        "gpu",
        "datacenter",
        700.0,
        80.0,
        575.1,
        2022,
    )
    m2 = hardware_profiles()["apple_m2"]
    assert (m2.kind, m2.tier, m2.tdp_w, m2.year) == ("soc", "mobile", None, None)  # blank stays blank


def test_conf_hardware_profiles_exist() -> None:
    conf = Path(__file__).resolve().parents[1] / "conf" / "hardware"
    if not conf.is_dir():
        pytest.skip("no conf/ next to tests/")
    for path in conf.glob("*.yaml"):
        m = re.search(r"^profile:\s*(\S+)", path.read_text(), re.M)
        if m and m.group(1) != "null":
            assert m.group(1) in hardware_profiles(), path.name


@pytest.mark.parametrize(
    ("detected", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM 80GB"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe 80GB"),
        ("Tesla T4", "NVIDIA T4"),
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 SXM4 40GB"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB"),
        ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 PCIe 40GB"),
        ("Tesla V100-SXM2-32GB", "NVIDIA Tesla V100 SXM2 32GB"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("NVIDIA L40S", "NVIDIA L40S 48GB"),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654"),
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K"),
        ("Apple M2 Max", "Apple M2 Max"),
        ("Intel(R) Xeon(R) Processor", None),
        ("NVIDIA L40", None),  # neither the L4 nor the L40S
        ("Tesla V100-SXM2-16GB", None),  # no 16 GB SXM2 row
        ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
        ("AMD Ryzen 9 7950X3D 16-Core Processor", None),
        ("Apple M2 Pro", None),
        ("", None),
    ],
)
def test_match_hardware(detected: str, expected: str | None) -> None:
    found = match_hardware(detected)
    assert (found.name if found else None) == expected
