"""Bands: every estimated figure as low, point and high, computed by hand from the models' coefficients,
the trials' CI and the factors' ranges (issue 27)."""

from __future__ import annotations

import math

import pytest

from ecopipe.config import Attribution
from ecopipe.cpu_coefficients import CpuPowerCoefficients
from ecopipe.cpu_identity import CpuIdentity
from ecopipe.job import footprint_stages
from ecopipe.monitor.energy import Bound, Energy, EnergyMeter, Window
from ecopipe.monitor.stats import Band, band_of, spread
from ecopipe.reference import Factor
from ecopipe.report import band_metrics, headline_metrics, inference_metrics, metric_band
from ecopipe.results import IdleBaseline, InferenceResult, ModelFacts, TrialResult
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.sensors.estimated import CpuShare, EstimatedCpuSensor, EstimatedRamSensor
from ecopipe.stages.impact import ImpactFactors
from tests.fakes import ticks

T3 = 2.484138  # t(0.975, 2) / sqrt(3) x a sample std of 1: the 95% half-width of (1, 2, 3)


# ---------------------------------------------------------------- statistics


def test_band_of_combines_each_bound_with_its_own_ci():
    band = band_of([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0])
    assert band.point == 3.0
    assert band.low == pytest.approx(2.0 - T3, rel=1e-6)  # the low bound's mean less its CI
    assert band.high == pytest.approx(5.0 + T3, rel=1e-6)  # the high bound's mean plus its CI
    one = band_of([1.0], [2.0], [4.0])  # one trial: no CI, the coefficients' range alone
    assert (one.low, one.point, one.high) == (1.0, 2.0, 4.0)
    measured = band_of([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # a measurement: its CI
    assert measured.low == pytest.approx(2.0 - T3) and measured.high == pytest.approx(2.0 + T3)


def test_band_refuses_disorder_and_scales_with_its_sign():
    with pytest.raises(ValueError, match="low <= point <= high"):
        Band(2.0, 1.0, 3.0)
    assert Band(1.0, 2.0, 4.0).scaled(-1.0) == Band(-4.0, -2.0, -1.0)
    assert spread([3.0, 1.0, 2.0]) == Band(1.0, 1.0, 3.0)  # the middle value is the point, as given


# ---------------------------------------------------------------- sensors

IDENTITY = CpuIdentity("intel", "test_arch", "user", "given by the test")
COEFFICIENTS = CpuPowerCoefficients(
    label="test microarchitecture",
    known=True,
    idle_w=(0.5, 1.0, 2.0),
    full_w=(2.0, 4.0, 6.0),
    memory_gb_per_thread=1.5,
    results=3,
    source="hand-made for the test",
)


def test_cpu_estimate_at_three_bounds_hand_computed():
    share = CpuShare(CpuPower(IDENTITY, COEFFICIENTS), threads=2, note="given")
    # 10 s at 50% of 2 threads (10 CPU seconds): per thread idle + 0.5 x (full - idle)
    #   low 0.5 + 0.75 = 1.25 W, point 1 + 1.5 = 2.5 W, high 2 + 2 = 4 W; x 2 threads x 10 s
    seconds = iter([0.0, 10.0])
    sensor = EstimatedCpuSensor(share, clock=ticks(0.0), cpu_seconds=lambda _exclude: next(seconds))
    sensor.open()
    assert sensor.read_band_at(10.0) == pytest.approx((25.0, 50.0, 80.0))
    assert sensor.read_joules_at(10.0) == pytest.approx(50.0)  # the point, and no second advance
    assert share.memory_allowance_gb == 3.0  # 1.5 GB per thread x 2 threads counted in the cpu figure


def test_ram_estimate_charges_only_memory_beyond_the_cpu_figure():
    # 10 GB held, 3 GB already in the SPECpower figure: 7 GB x (0.02, 0.375, 0.375) W/GB x 4 s
    ram = EstimatedRamSensor.held_by_job(3.0, clock=ticks(0.0), gigabytes=lambda _exclude: 10.0)
    ram.open()
    assert ram.read_band_at(4.0) == pytest.approx((0.56, 10.5, 10.5))
    small = EstimatedRamSensor.held_by_job(3.0, clock=ticks(0.0), gigabytes=lambda _exclude: 2.0)
    small.open()
    assert small.read_band_at(4.0) == (0.0, 0.0, 0.0)  # all of it within the allowance: never twice
    assert "beyond 3 GiB counted in the cpu figure" in small.method


def test_meter_windows_carry_both_ends():
    clock = iter([0.0, 0.0, 4.0])  # built (the meter's wall-clock offset), then the window's two edges
    ram = EstimatedRamSensor.held_by_job(0.0, clock=lambda: 0.0, gigabytes=lambda _exclude: 8.0)
    meter = EnergyMeter([ram], clock=lambda: next(clock))
    meter.open()
    window = meter.since(meter.snapshot())
    assert window.at(Bound.LOW).ram == pytest.approx(0.02 * 8 * 4)
    assert window.at(Bound.POINT).ram == pytest.approx(0.375 * 8 * 4) == window.energy.ram
    assert window.power_at(Bound.HIGH).ram == pytest.approx(3.0)
    assert Window(Energy(gpu=5.0), 1.0).at(Bound.LOW) == Energy(gpu=5.0)  # measured: the same at every end


# ---------------------------------------------------------------- the stage's figures


def _trial(low: float, point: float, high: float, seconds: float = 2.0) -> TrialResult:
    window = Window(Energy(cpu=point), seconds, low=Energy(cpu=low), high=Energy(cpu=high))
    return TrialResult(window, passes=1, samples=1000, tokens_in=0, tokens_out=500)


def _estimated(trials, idle: Window | None = None) -> InferenceResult:
    return InferenceResult(
        device="cpu",
        sources={"gpu": "none", "cpu": "estimated_specpower", "ram": "none"},
        measured={"gpu": False, "cpu": False, "ram": False},
        methods={"cpu": "test"},
        resolution_s={},
        facts=ModelFacts(1_000_000, 1_000_000.0, "float32", "fitted"),
        load=Window(Energy(), 0.0),
        fit=None,
        baseline=IdleBaseline(idle, None),
        trials=tuple(trials),
        quality={},
        batch_latencies_s=(),
        batch_size=1,
        trace=None,
    )


def test_per_1k_band_and_net_band_by_hand():
    idle = Window(Energy(cpu=2.0), 2.0, low=Energy(cpu=1.0), high=Energy(cpu=4.0))  # 1, 0.5, 2 W
    result = _estimated([_trial(1.0, 2.0, 4.0), _trial(2.0, 3.0, 5.0), _trial(3.0, 4.0, 6.0)], idle)
    assert result.figures_label == "ESTIMATE"
    gross = result.per_1k_bands(Attribution.gross)["total"]
    # the low end's mean less its CI is 2 - 2.48 < 0: a gross energy stops at zero
    assert gross.point == pytest.approx(3.0) and gross.low == 0.0
    assert gross.high == pytest.approx(5.0 + T3)
    # net per trial = gross - idle W x 2 s, at each bound: low 1-1, 2-1, 3-1; high 4-4, 5-4, 6-4
    net = result.per_1k_bands(Attribution.net)["cpu"]
    assert net.point == pytest.approx(1.0)
    assert net.low == pytest.approx(1.0 - T3) and net.high == pytest.approx(1.0 + T3)
    metrics = inference_metrics(result)
    assert metrics["energy_per_1k_gross_j_low"] == 0.0
    assert metrics["energy_per_1k_gross_j.cpu_high"] == pytest.approx(5.0 + T3)
    # Whole run: 3 trials, 9 J at the point, 6 J low, 15 J high; per 1,000 of its 1,500 tokens
    assert (metrics["energy_gross_j.total_low"], metrics["energy_gross_j.total_high"]) == (6.0, 15.0)
    assert metrics["energy_per_1k_tokens_gross_j_low"] == pytest.approx(6.0 * 1000 / 1500)
    assert metrics["idle_power_w.cpu_low"] == 0.5 and metrics["idle_power_w.cpu_high"] == 2.0


FACTORS = ImpactFactors(
    region="WORLD",
    region_name="World",
    carbon_intensity=Factor(400.0, "test", 2024),
    carbon_basis="lifecycle",
    pue=Factor(1.5, "test", 2024, low=1.2, high=2.0),
    wue=Factor(0.5, "test", 2023),
    ewif=Factor(3.0, "test", 2020),
    attribution=Attribution.gross,
)


def test_co2e_water_and_ess_bands_by_hand():
    kwh = 3.6e6  # J
    metrics = {
        **band_metrics("energy_per_1k_gross_j", Band(0.5 * kwh, kwh, 2.0 * kwh)),
        **band_metrics("energy_gross_j.total", Band(0.5 * kwh, kwh, 2.0 * kwh)),
        "energy_per_1k_gross_ci95_j": 0.1 * kwh,
        "window_s": 10.0,
        "samples": 1000,
        "tokens": 0,
    }
    _, ess, stage = footprint_stages(metrics, FACTORS, 2e8, None, None)
    # CO2e = kWh x PUE x 400 g: low 0.5 x 1.2 x 400, point 1 x 1.5 x 400, high 2 x 2.0 x 400
    assert metric_band(stage, "co2e_g_per_1k") == Band(240.0, 600.0, 1600.0)
    # water = kWh x WUE + kWh x PUE x EWIF: low 0.25 + 1.8, point 0.5 + 4.5, high 1 + 12
    water = metric_band(stage, "water_l_per_1k")
    assert (water.low, water.point, water.high) == pytest.approx((2.05, 5.0, 13.0))
    # ESS = 200 M parameters / g: the highest CO2e gives the lowest ESS
    assert metric_band(stage, "ess") == Band(200 / 1600, 200 / 600, 200 / 240)
    assert ess.ess == pytest.approx(200 / 600)
    assert (stage["pue_low"], stage["pue_high"]) == (1.2, 2.0)
    headline = headline_metrics({**metrics, **stage})
    assert headline["headline/co2e_mg_per_1k_low"] == 240.0 * 1e3
    assert headline["headline/ess_Mparams_per_gCO2e_high"] == pytest.approx(200 / 240, rel=1e-3)
    assert "headline/throughput_per_s_low" not in headline  # measured figures have no coefficient band


def test_factors_without_a_range_keep_their_point():
    point = ImpactFactors("WORLD", "World", Factor(400.0, "t", 2024), "lifecycle", Factor(1.5, "t", 2024),
                          Factor(0.5, "t", None), Factor(3.0, "t", None), Attribution.gross)  # fmt: skip
    assert point.at(Bound.LOW) is point and FACTORS.at(Bound.HIGH).pue.value == 2.0
    assert math.isclose(FACTORS.at(Bound.LOW).pue.value, 1.2)


def test_a_gross_band_never_goes_below_zero_and_an_ess_over_zero_co2e_has_no_upper_bound():
    # Two trials, far apart: mean 2, 95% half-width 12.7 x 1/sqrt(2) x sqrt(2) = 12.7; gross stops at 0.
    result = _estimated([_trial(0.5, 1.0, 1.5), _trial(2.5, 3.0, 3.5)])
    gross = result.per_1k_bands(Attribution.gross)["total"]
    assert gross.low == 0.0 and gross.point == pytest.approx(2.0)
    metrics = inference_metrics(result) | {"samples": 1000, "window_s": 4.0}
    _, _, stage = footprint_stages(metrics, FACTORS, 2e8, None, None)
    assert stage["co2e_g_per_1k_low"] == 0.0
    # ESS = parameters / CO2e: infinite at the low end, so only its lowest value is logged
    assert stage["ess_low"] == pytest.approx(200 / stage["co2e_g_per_1k_high"])
    assert "ess_high" not in stage and math.isinf(metric_band(stage, "ess").high)
    assert "headline/ess_Mparams_per_gCO2e_high" not in headline_metrics({**metrics, **stage})


def test_a_named_arm_cpu_is_identified_by_its_sku():
    from ecopipe.sensors.estimated import cpu_power

    altra = cpu_power("Ampere Altra Q80-30")  # hardware.cpu_model: no /proc/cpuinfo of its own
    assert (altra.identity.microarch, altra.identity.how) == ("neoverse_n1", "name")
