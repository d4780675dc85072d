"""Impact and ESS: worked examples by hand, factor precedence, ESS invariance, re-impact from MLflow."""

from __future__ import annotations

import math

import pytest

from ecopipe.config import Attribution, ImpactConfig, MonitorConfig
from ecopipe.job import run_job
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.names import Tag
from ecopipe.reference import Factor
from ecopipe.reimpact import main, reimpact_run
from ecopipe.report import energy_basis, inference_metrics
from ecopipe.results import ModelFacts
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.stages import inference
from ecopipe.stages.ess import run_ess
from ecopipe.stages.impact import EnergyBasis, ImpactFactors, footprint, resolve_factors, run_impact
from ecopipe.stages.inference import run_inference
from tests.fakes import ScriptedClock


def factors(ci=400.0, pue=1.2, wue=0.5, ewif=4.0, attribution=Attribution.gross) -> ImpactFactors:
    return ImpactFactors(
        "TEST",
        "test",
        Factor(ci, "t", None),
        "lifecycle",
        Factor(pue, "t", None),
        Factor(wue, "t", None),
        Factor(ewif, "t", None),
        attribution,
    )


def test_worked_example_carbon_and_water():
    # 3,600 J = 0.001 kWh IT; x PUE 1.2 = 0.0012 kWh facility; x 400 g/kWh = 0.48 g CO2e.
    fp = footprint(3600.0, factors())
    assert fp.energy_facility_j == pytest.approx(4320.0)
    assert fp.co2e_g == pytest.approx(0.48)
    # water: 0.001 kWh x 0.5 L/kWh on site + 0.0012 kWh x 4 L/kWh off site = 0.0005 + 0.0048 L
    assert fp.water_onsite_l == pytest.approx(0.0005)
    assert fp.water_offsite_l == pytest.approx(0.0048)
    assert fp.water_l == pytest.approx(0.0053)


def test_normalisations_embodied_and_ess():
    # 1,000 inferences cost 3,600 J; the run: 7,200 J over 2,000 samples in 3.6 s and 500 tokens.
    basis = EnergyBasis(3600.0, 36.0, 7200.0, 3.6, 2000, 500)
    impact = run_impact(basis, factors(), embodied_kgco2e=575.1, lifetime_years=4.0)
    assert impact.per_1k.co2e_g == pytest.approx(0.48)
    assert impact.per_inference.co2e_g == pytest.approx(0.00048)
    assert impact.run.co2e_g == pytest.approx(0.96)
    assert impact.per_1k_tokens.co2e_g == pytest.approx(0.96 * 1000 / 500)
    assert impact.per_hour.co2e_g == pytest.approx(0.96 * 3600 / 3.6)
    assert impact.per_1k_co2e_ci95_g == pytest.approx(0.0048)
    # embodied: 575,100 g x (1.8 s per 1,000 inferences) / (4 x 365.25 x 86,400 s)
    assert impact.embodied_co2e_g_per_1k == pytest.approx(575100 * 1.8 / (4 * 365.25 * 86400))
    ess = run_ess(125e6, impact)
    assert ess.ess == pytest.approx(125 / 0.48, rel=1e-12)
    assert ess.ess_run == pytest.approx(125 / 0.96, rel=1e-12)
    assert ess.ecep_wh_per_mparam == pytest.approx(1.0 / 125, rel=1e-12)  # 3,600 J = 1 Wh per 1,000
    # Embodied carbon needs both the hardware's figure and its service life.
    assert run_impact(basis, factors(), None, 4.0).embodied_co2e_g_per_1k is None
    assert run_impact(basis, factors(), 575.1, None).embodied_co2e_g_per_1k is None
    # An ESS over zero CO2e (a zero-carbon grid) is not defined, not a division error.
    zero = run_ess(125e6, run_impact(basis, factors(ci=0.0)))
    assert math.isnan(zero.ess) and math.isnan(zero.ess_run)


def test_factor_precedence():
    world = resolve_factors(ImpactConfig(), "WORLD", "desktop")
    assert (world.region_name, world.carbon_basis) == ("World", "lifecycle")
    assert world.carbon_intensity.value == 473.01 and world.pue.value == 1.0 and world.wue.value == 0.0
    assert world.ewif.value == 4.81
    france_dc = resolve_factors(ImpactConfig(), "FR", "datacenter")
    assert (france_dc.region, france_dc.carbon_intensity.value, france_dc.pue.value) == ("FRA", 44.18, 1.56)
    assert france_dc.ewif.value == 3.674
    cloud = resolve_factors(ImpactConfig(), "aws/us-east-1", "desktop")
    assert cloud.pue.value == 1.15 and cloud.wue.value == 0.12  # the region's, not the tier's
    forced = resolve_factors(
        ImpactConfig(carbon_intensity=100.0, pue=1.3, wue=0.2, ewif=1.0), "FRA", "desktop"
    )
    assert [f.value for f in (forced.carbon_intensity, forced.pue, forced.wue, forced.ewif)] == [
        100,
        1.3,
        0.2,
        1,
    ]
    assert forced.carbon_intensity.source == "override" and forced.carbon_basis == "override"


class FixedCostWorkload(inference.Workload):
    """`n` samples in batches of 50; each batch takes 0.05 s on a scripted clock: cost per sample is fixed."""

    def __init__(self, clock: ScriptedClock, n: int) -> None:
        self.clock, self.n = clock, n

    def load(self) -> None: ...

    def batches(self):
        return [list(range(50))] * (self.n // 50)

    def predict(self, batch):
        self.clock.now += 0.05
        return batch

    def quality(self, outputs):
        return {}

    def facts(self):
        return ModelFacts(1_000_000, 1e6, "float32", "fitted")


@pytest.mark.parametrize("attribution", list(Attribution))
def test_ess_does_not_depend_on_the_number_of_samples(monkeypatch, attribution):
    """The same job on 100 and 400 samples: ESS (per 1,000 inferences) is equal, ess_run is not.

    The simulated GPU idles at 60 W during the baseline (the first second), then draws 100-101 W.
    """
    results = {}
    for limit in (100, 400):
        monkeypatch.setattr(inference, "_IDLE_CACHE", {})
        clock = ScriptedClock()
        meter = EnergyMeter(
            [FakeGpuSensor(lambda t: 60.0 if t < 1.0 else 100.0 + (t % 1.0), clock=clock)], clock=clock
        )
        meter.open()
        monitor = MonitorConfig(trials=3, min_window_s=0.0, min_iterations=1, warmup_batches=0, idle_s=1.0)
        result = run_inference(
            FixedCostWorkload(clock, limit),
            meter,
            monitor,
            batch_size=50,
            sleep=lambda s, clock=clock: setattr(clock, "now", clock.now + s),
        )
        impact = run_impact(energy_basis(inference_metrics(result), attribution), factors())
        results[limit] = run_ess(1e6, impact)
    assert results[100].ess == pytest.approx(results[400].ess, rel=0.02)
    assert results[100].ess_run == pytest.approx(4 * results[400].ess_run, rel=0.02)


def test_reimpact_reproduces_and_moves(make_cfg, client):
    """Re-impact in the original's region repeats its figures; in France, they follow FRA's grid.

    The hand values use the factors this test sets and the published FRA intensity, never the factors
    the original run logged (tests/test_figures_end_to_end.py recomputes every figure of both)."""
    original = client.get_run(run_job(make_cfg("monitor.fake_gpu_watts=50", "impact.pue=1.3")).run_id)
    same = client.get_run(reimpact_run(client, original, ["region=WORLD"]))
    for key in (
        "co2e_g_per_1k",
        "water_l_per_1k",
        "ess",
        "ess_run",
        "energy_per_1k_gross_j",
        "co2e_g_per_hour",
    ):
        assert same.data.metrics[key] == pytest.approx(original.data.metrics[key], rel=1e-12), key
    assert same.data.tags[Tag.REIMPACT_OF] == original.info.run_id
    france = client.get_run(reimpact_run(client, original, ["region=FRA", "impact.attribution=net"]))
    m, o = france.data.metrics, original.data.metrics
    assert france.data.params["region"] == "FRA" and france.data.tags[Tag.ATTRIBUTION] == "net"
    # FRA: 44.18 g/kWh (Ember 2025, lifecycle); the PUE override travels with the run.
    expected = o["energy_per_1k_net_j"] / 3.6e6 * 1.3 * 44.18
    assert m["co2e_g_per_1k"] == pytest.approx(expected, rel=1e-9)
    assert m["co2e_g_run"] == pytest.approx(o["energy_net_j.total"] / 3.6e6 * 1.3 * 44.18, rel=1e-9)


def test_reimpact_cli_refuses_unknown_region(make_cfg, store, capsys):
    run_id = run_job(make_cfg()).run_id
    assert main(["--run-id", run_id, "--tracking-uri", store, "region=ATLANTIS"]) == 2
    assert "ATLANTIS" in capsys.readouterr().err
    assert main(["--run-id", run_id, "--tracking-uri", store, "impact.pue=0.5"]) == 2
    assert "impact.pue=0.5" in capsys.readouterr().err
    assert main(["--run-id", "0" * 32, "--tracking-uri", store, "region=FRA"]) == 2
    assert "0" * 32 in capsys.readouterr().err
    assert main(["--experiment", "ecopipe", "--tracking-uri", store, "region=US-CA"]) == 0
