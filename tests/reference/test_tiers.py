"""Tiers' PUE and WUE with their ranges, and each water factor's basis, as the shipped tables give them."""

from __future__ import annotations

import pytest

from ecopipe import reference
from ecopipe.config import ImpactConfig
from ecopipe.reference import (
    TIERS,
    WATER_BASES,
    Factor,
    resolve_region,
    tier_pue,
    tier_wue,
    water_basis,
)
from ecopipe.stages.impact import resolve_factors
from tests.reference.conftest import rows


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
