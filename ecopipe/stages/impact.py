"""Impact stage: measured energy -> facility energy, CO2e and water (DESIGN.md section 5).

It reads energy only, never the workload, so `ecopipe.reimpact` can recompute it for another grid
from what MLflow already holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ecopipe.config import Attribution, ImpactConfig
from ecopipe.monitor.energy import Bound
from ecopipe.reference import Factor, RegionFactors, resolve_region, tier_pue, tier_wue

JOULES_PER_KWH = 3.6e6
SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True)
class ImpactFactors:
    """Every constant of the conversion, each with its source."""

    region: str
    region_name: str
    carbon_intensity: Factor  # gCO2e/kWh
    carbon_basis: str
    pue: Factor
    wue: Factor  # L per IT kWh, on site
    ewif: Factor  # L per kWh generated, off site
    attribution: Attribution

    def at(self, bound: Bound) -> ImpactFactors:
        """The factors at one end of their sourced ranges (the PUE's, where its source gives one)."""
        end = {Bound.LOW: self.pue.low, Bound.HIGH: self.pue.high}.get(bound)
        return self if end is None else replace(self, pue=replace(self.pue, value=end))


def _override(value: float | None, fallback: Factor) -> Factor:
    return fallback if value is None else Factor(value, "override", None)


def resolve_factors(cfg: ImpactConfig, region: str, tier: str) -> ImpactFactors:
    """Region table first, the hardware tier where the region has no facility figure, user overrides last."""
    zone: RegionFactors = resolve_region(region)
    return ImpactFactors(
        region=zone.region,
        region_name=zone.name,
        carbon_intensity=_override(cfg.carbon_intensity, zone.carbon_intensity),
        carbon_basis=zone.carbon_basis if cfg.carbon_intensity is None else "override",
        pue=_override(cfg.pue, zone.pue or tier_pue(tier)),
        wue=_override(cfg.wue, zone.wue or tier_wue(tier)),
        ewif=_override(cfg.ewif, zone.ewif),
        attribution=cfg.attribution,
    )


@dataclass(frozen=True)
class Footprint:
    energy_it_j: float
    energy_facility_j: float
    co2e_g: float
    water_onsite_l: float
    water_offsite_l: float

    @property
    def water_l(self) -> float:
        return self.water_onsite_l + self.water_offsite_l

    def scaled(self, factor: float) -> Footprint:
        return Footprint(
            *(
                factor * v
                for v in (
                    self.energy_it_j,
                    self.energy_facility_j,
                    self.co2e_g,
                    self.water_onsite_l,
                    self.water_offsite_l,
                )
            )
        )


def footprint(energy_it_j: float, factors: ImpactFactors) -> Footprint:
    """E_facility = E_it x PUE; CO2e = E_facility x CI; water = E_it x WUE + E_facility x EWIF."""
    it_kwh = energy_it_j / JOULES_PER_KWH
    facility_kwh = it_kwh * factors.pue.value
    return Footprint(
        energy_it_j=energy_it_j,
        energy_facility_j=facility_kwh * JOULES_PER_KWH,
        co2e_g=facility_kwh * factors.carbon_intensity.value,
        water_onsite_l=it_kwh * factors.wue.value,
        water_offsite_l=facility_kwh * factors.ewif.value,
    )


@dataclass(frozen=True)
class EnergyBasis:
    """The energy figures impact needs; built from an InferenceResult or read back from MLflow."""

    energy_per_1k_j: float  # mean over trials, under the chosen attribution
    energy_per_1k_ci95_j: float
    run_energy_j: float  # whole measured run (all trials), same attribution
    run_duration_s: float
    samples: int
    tokens: int  # generated tokens where the model generates, else input tokens; 0 without tokens


@dataclass(frozen=True)
class ImpactResult:
    factors: ImpactFactors
    per_1k: Footprint
    per_1k_co2e_ci95_g: float
    run: Footprint
    per_hour: Footprint  # running the workload for one hour at the measured rate
    per_1k_tokens: Footprint | None
    embodied_co2e_g_per_1k: float | None

    @property
    def per_inference(self) -> Footprint:
        return self.per_1k.scaled(1e-3)


def run_impact(
    basis: EnergyBasis,
    factors: ImpactFactors,
    embodied_kgco2e: float | None = None,
    lifetime_years: float | None = None,
) -> ImpactResult:
    per_1k = footprint(basis.energy_per_1k_j, factors)
    run = footprint(basis.run_energy_j, factors)
    embodied = None
    if embodied_kgco2e is not None and lifetime_years:
        seconds_per_1k = basis.run_duration_s / basis.samples * 1000
        embodied = embodied_kgco2e * 1000 * seconds_per_1k / (lifetime_years * SECONDS_PER_YEAR)
    return ImpactResult(
        factors=factors,
        per_1k=per_1k,
        per_1k_co2e_ci95_g=footprint(basis.energy_per_1k_ci95_j, factors).co2e_g,
        run=run,
        per_hour=run.scaled(3600 / basis.run_duration_s),
        per_1k_tokens=run.scaled(1000 / basis.tokens) if basis.tokens else None,
        embodied_co2e_g_per_1k=embodied,
    )
