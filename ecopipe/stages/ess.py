"""ESS stage: the Environmental Sustainability Score and its companions (DESIGN.md section 6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ecopipe.stages.impact import JOULES_PER_KWH, ImpactResult


@dataclass(frozen=True)
class SustainabilityResult:
    effective_params_m: float
    # effective parameters (M) / gCO2e per 1,000 inferences: independent of the run's size; NaN (not
    # defined) where that CO2e is zero or negative, as net CO2e is when a window drew less than idle
    ess: float
    ess_run: float  # the same over the whole run's CO2e (ML-EcoLyzer's formula, for comparison)
    ecep_wh_per_mparam: float  # Wh per 1,000 inferences / effective parameters (M)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def run_ess(effective_parameters: float, impact: ImpactResult) -> SustainabilityResult:
    params_m = effective_parameters / 1e6
    wh_per_1k = impact.per_1k.energy_it_j / JOULES_PER_KWH * 1000
    return SustainabilityResult(
        effective_params_m=params_m,
        ess=_ratio(params_m, impact.per_1k.co2e_g),
        ess_run=_ratio(params_m, impact.run.co2e_g),
        ecep_wh_per_mparam=_ratio(wh_per_1k, params_m),
    )
