"""Every headline figure of a real job, recomputed by hand from what the job measured.

A tiny random-weights GPT-2 (a mixture-of-experts share, so effective parameters differ from the total)
generates from synthetic prompts on a simulated GPU at a known power, with the impact factors given.
From the job's logged raw measurements only (per-trial windows, per-trial component energies, samples,
tokens, idle power) and the factors this file sets, the test recomputes energy gross/idle/net per
component, CO2e and water per inference, per 1,000, per hour, per run and per 1,000 tokens, ESS,
`ess_run`, ECEP and embodied carbon, in both attributions, with and without embodied carbon, and for
re-impacts with each override. Nothing expected is read from a factor or a figure the code derived.
"""

from __future__ import annotations

import functools
import math
import statistics

import pytest

from ecopipe.job import run_job
from ecopipe.names import Metric, Tag, TagFamily
from ecopipe.reimpact import reimpact_run

# ---------------------------------------------------------------- logged names, in one place
# The test computes in J, g, L and W; each entry is (logged key, factor from that unit to the logged one),
# so a renamed key or a new unit for a headline figure is a one-line change here.
COMPONENTS = ("gpu", "cpu", "ram")
FOOTPRINT = {  # one per normalisation: {basis} is per_1k, per_inference, run, per_hour, per_1k_tokens
    "energy_it_j": ("energy_it_j_{basis}", 1.0),
    "energy_facility_j": ("energy_facility_j_{basis}", 1.0),
    "co2e_g": ("co2e_g_{basis}", 1.0),
    "water_onsite_l": ("water_onsite_l_{basis}", 1.0),
    "water_offsite_l": ("water_offsite_l_{basis}", 1.0),
    "water_l": ("water_l_{basis}", 1.0),
}
KEY = {
    "energy_run": ("energy_{attribution}_j.{component}", 1.0),
    "energy_idle": ("energy_idle_j.{component}", 1.0),
    "energy_per_1k": ("energy_per_1k_{attribution}_j", 1.0),
    "energy_per_1k_component": ("energy_per_1k_{attribution}_j.{component}", 1.0),
    "energy_per_1k_ci95": ("energy_per_1k_{attribution}_ci95_j", 1.0),
    "energy_per_1k_cv": ("energy_per_1k_{attribution}_cv", 1.0),
    "energy_per_1k_tokens": ("energy_per_1k_tokens_{attribution}_j", 1.0),
    "energy_per_1k_tokens_component": ("energy_per_1k_tokens_{attribution}_j.{component}", 1.0),
    "co2e_per_1k_ci95": ("co2e_ci95_g_per_1k", 1.0),
    "embodied_per_1k": ("embodied_co2e_g_per_1k", 1.0),
    "ess": ("ess", 1.0),
    "ess_run": ("ess_run", 1.0),
    "ecep": ("ecep_wh_per_mparam", 1.0),
    "throughput": ("throughput_per_s", 1.0),
}
# Raw measurements the hand computation starts from (per-trial ones are MLflow steps).
TRIAL_WINDOW, TRIAL_SAMPLES, TRIAL_ENERGY = "trial_window_s", "trial_samples", "trial_energy_j.{component}"
IDLE_POWER = "idle_power_w.{component}"

# ---------------------------------------------------------------- the job and its factors
GPU_WATTS = 80.0
CI, PUE, WUE, EWIF = 300.0, 1.25, 0.4, 2.5  # g/kWh, -, L per IT kWh, L per facility kWh
LIFETIME_YEARS = 4.0
H100_EMBODIED_KG = 575.1  # ecopipe/data/hardware.csv, NVIDIA H100 SXM 80GB (BoaviztAPI 2.5.0)
T_975_ONE_DOF = 12.706204736174698  # Student's t, 97.5% quantile, 2 trials

NEW_TOKENS, PROMPTS, SEQ_LEN = 2, 4, 8
# GPT-2 shrunk: vocabulary V, positions P, width E, L layers; the head shares the embedding's weights.
V, P, E, L = 256, 64, 32, 2
PARAMETERS = V * E + P * E + L * (12 * E * E + 13 * E) + 2 * E  # embeddings, blocks, final layer norm
ACTIVE_FRACTION = 0.5
TINY_GPT2 = [
    "model=gpt2",
    "model.weights=random",
    f"+model.config_overrides={{n_layer:{L},n_embd:{E},n_head:2,vocab_size:{V},n_positions:{P}}}",
    f"model.active_params_fraction={ACTIVE_FRACTION}",
    f"model.max_new_tokens={NEW_TOKENS}",
    "dataset=synthetic_text",
    f"dataset.limit={PROMPTS}",
    f"dataset.seq_len={SEQ_LEN}",
    "batch_size=2",
    f"monitor.fake_gpu_watts={GPU_WATTS}",
    f"impact.carbon_intensity={CI}",
    f"impact.pue={PUE}",
    f"impact.wue={WUE}",
    f"impact.ewif={EWIF}",
]
JOULES_PER_KWH = 3.6e6
SECONDS_PER_YEAR = 365.25 * 24 * 3600
REL = 1e-9  # every figure is float arithmetic on logged doubles: only rounding may differ


@pytest.fixture
def reported_as_h100(make_cfg):
    """make_cfg for a job that reports as an H100, whose embodied carbon is published.

    The job runs on the CPU with the simulated GPU (monitor.fake_gpu_watts, in TINY_GPT2): a GPU profile
    is allowed then, under a name that says SIMULATED.
    """
    return functools.partial(make_cfg, "hardware=h100", "hardware.device=cpu")


def logged(metrics: dict[str, float], name: str, **fields: str) -> float:
    key, unit = KEY[name]
    return metrics[key.format(**fields)] / unit


def logged_footprint(metrics: dict[str, float], quantity: str, basis: str) -> float:
    key, unit = FOOTPRINT[quantity]
    return metrics[key.format(basis=basis)] / unit


def history(client, run_id: str, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


class Measured:
    """What the job measured, as logged: per trial and the idle baseline."""

    def __init__(self, client, run_id: str) -> None:
        metrics = client.get_run(run_id).data.metrics
        self.windows = history(client, run_id, TRIAL_WINDOW)
        self.samples = history(client, run_id, TRIAL_SAMPLES)
        self.energy = {c: history(client, run_id, TRIAL_ENERGY.format(component=c)) for c in COMPONENTS}
        self.idle_w = {c: metrics[IDLE_POWER.format(component=c)] for c in COMPONENTS}
        self.trials = len(self.windows)

    def trial_energy(self, i: int, component: str, attribution: str) -> float:
        gross = self.energy[component][i]
        return gross if attribution == "gross" else gross - self.idle_w[component] * self.windows[i]


def footprint(joules: float, ci: float, pue: float, wue: float, ewif: float) -> dict[str, float]:
    it_kwh = joules / JOULES_PER_KWH
    facility_kwh = it_kwh * pue
    return {
        "energy_it_j": joules,
        "energy_facility_j": joules * pue,
        "co2e_g": facility_kwh * ci,
        "water_onsite_l": it_kwh * wue,
        "water_offsite_l": facility_kwh * ewif,
        "water_l": it_kwh * wue + facility_kwh * ewif,
    }


def hand_figures(
    m: Measured,
    attribution: str,
    ci: float = CI,
    pue: float = PUE,
    wue: float = WUE,
    ewif: float = EWIF,
    embodied_years: float | None = None,
) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """(figures by KEY name and field, footprints by quantity and basis), all by hand."""
    n, window, samples = m.trials, sum(m.windows), sum(m.samples)
    tokens = samples * NEW_TOKENS  # min = max new tokens: every prompt generates exactly NEW_TOKENS
    run = {c: sum(m.trial_energy(i, c, attribution) for i in range(n)) for c in COMPONENTS}
    run_total = sum(run.values())
    per_1k_trials = [
        sum(m.trial_energy(i, c, attribution) for c in COMPONENTS) * 1000 / m.samples[i] for i in range(n)
    ]
    per_1k = sum(per_1k_trials) / n
    std = statistics.stdev(per_1k_trials)
    ci95 = T_975_ONE_DOF * std / math.sqrt(n)
    figures = {
        ("energy_per_1k", ""): per_1k,
        ("energy_per_1k_ci95", ""): ci95,
        ("energy_per_1k_cv", ""): std / per_1k,
        ("energy_per_1k_tokens", ""): run_total * 1000 / tokens,
        ("co2e_per_1k_ci95", ""): ci95 / JOULES_PER_KWH * pue * ci,
        ("throughput", ""): sum(s / w for s, w in zip(m.samples, m.windows, strict=True)) / n,
    }
    for c in COMPONENTS:
        figures[("energy_run", c)] = run[c]
        figures[("energy_idle", c)] = m.idle_w[c] * window
        figures[("energy_per_1k_component", c)] = (
            sum(m.trial_energy(i, c, attribution) * 1000 / m.samples[i] for i in range(n)) / n
        )
        figures[("energy_per_1k_tokens_component", c)] = run[c] * 1000 / tokens
    per_1k_fp, run_fp = footprint(per_1k, ci, pue, wue, ewif), footprint(run_total, ci, pue, wue, ewif)
    normalised = {
        "per_1k": (per_1k_fp, 1.0),
        "per_inference": (per_1k_fp, 1e-3),
        "run": (run_fp, 1.0),
        "per_hour": (run_fp, 3600 / window),
        "per_1k_tokens": (run_fp, 1000 / tokens),
    }
    footprints = {
        (quantity, basis): fp[quantity] * scale
        for basis, (fp, scale) in normalised.items()
        for quantity in FOOTPRINT
    }
    effective_m = PARAMETERS * ACTIVE_FRACTION / 1e6
    figures[("ess", "")] = effective_m / per_1k_fp["co2e_g"]
    figures[("ess_run", "")] = effective_m / run_fp["co2e_g"]
    figures[("ecep", "")] = per_1k / 3600 / effective_m  # Wh per 1,000 inferences per M parameters
    if embodied_years is not None:
        seconds_per_1k = window / samples * 1000
        figures[("embodied_per_1k", "")] = (
            H100_EMBODIED_KG * 1000 * seconds_per_1k / (embodied_years * SECONDS_PER_YEAR)
        )
    return figures, footprints


def assert_figures(metrics: dict[str, float], m: Measured, attribution: str, **factors) -> None:
    """Every figure equals its hand value to rounding.

    A net figure is a difference of nearly equal numbers (the simulated GPU's net is zero), so its
    rounding is that of the gross figure it came from: the tolerance is relative to the gross value.
    """
    figures, footprints = hand_figures(m, attribution, **factors)
    scale_figures, scale_footprints = hand_figures(m, "gross", **factors)
    for (name, component), value in figures.items():
        got = logged(metrics, name, attribution=attribution, component=component)
        tolerance = REL * abs(scale_figures[(name, component)])
        assert got == pytest.approx(value, rel=REL, abs=tolerance), (name, component)
    for (quantity, basis), value in footprints.items():
        got = logged_footprint(metrics, quantity, basis)
        tolerance = REL * abs(scale_footprints[(quantity, basis)])
        assert got == pytest.approx(value, rel=REL, abs=tolerance), (quantity, basis)
    if ("embodied_per_1k", "") not in figures:
        assert KEY["embodied_per_1k"][0] not in metrics


def run_tiny_job(make_cfg, client, *overrides: str):
    outcome = run_job(make_cfg(*TINY_GPT2, *overrides))
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    return run


@pytest.mark.parametrize("embodied", [False, True], ids=["operational", "embodied"])
@pytest.mark.parametrize("attribution", ["gross", "net"])
def test_every_headline_figure_by_hand(client, reported_as_h100, attribution, embodied):
    extra = [f"impact.attribution={attribution}"]
    if embodied:
        extra += ["impact.embodied=true", f"impact.lifetime_years={LIFETIME_YEARS}"]
    run = run_tiny_job(reported_as_h100, client, *extra)
    metrics = run.data.metrics
    m = Measured(client, run.info.run_id)
    assert m.trials == 2 and len(m.samples) == 2 and all(s > 0 for s in m.samples)

    # The simulated GPU: each window's energy is its power x the window, and so is its idle power.
    for joules, seconds in zip(m.energy["gpu"], m.windows, strict=True):
        assert joules == pytest.approx(GPU_WATTS * seconds, rel=1e-9)
    assert m.idle_w["gpu"] == pytest.approx(GPU_WATTS, rel=1e-9)
    # Totals the job logged agree with its own per-trial steps, and the model was counted by hand.
    assert metrics["window_s"] == pytest.approx(sum(m.windows), rel=REL)
    assert metrics["samples"] == sum(m.samples)
    assert metrics["tokens"] == sum(m.samples) * NEW_TOKENS
    assert metrics["tokens_in"] == sum(m.samples) * SEQ_LEN
    assert metrics["parameters"] == PARAMETERS
    assert metrics["effective_parameters"] == PARAMETERS * ACTIVE_FRACTION
    if attribution == "net":  # a net ESS exists only over positive net CO2e: the CPU works harder busy
        assert sum(m.trial_energy(i, c, "net") for i in range(2) for c in COMPONENTS) > 0

    assert_figures(metrics, m, attribution, embodied_years=LIFETIME_YEARS if embodied else None)
    # Gross and idle are logged in both attributions, and net = gross - idle.
    gross, _ = hand_figures(m, "gross")
    # The AI Energy Score's metric: the GPU's gross energy per 1,000 queries, in Wh, whatever the
    # attribution (here the simulated GPU's, each trial's watts x window per sample, averaged).
    gpu_wh = gross[("energy_per_1k_component", "gpu")] / 3600
    assert metrics[Metric.GPU_WH_PER_1K] == pytest.approx(gpu_wh, rel=REL)
    for c in COMPONENTS:
        assert logged(metrics, "energy_run", attribution="gross", component=c) == pytest.approx(
            gross[("energy_run", c)], rel=REL
        )
        net = gross[("energy_run", c)] - m.idle_w[c] * sum(m.windows)
        assert logged(metrics, "energy_run", attribution="net", component=c) == pytest.approx(
            net, rel=REL, abs=REL * gross[("energy_run", c)]
        )
    tags = run.data.tags
    assert tags[Tag.ATTRIBUTION] == attribution
    assert tags[TagFamily.FACTOR_SOURCE.of("carbon_intensity")] == "override"
    assert tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "fake" and tags[Tag.HARDWARE_KEY] == "h100"
    assert tags[Tag.HARDWARE] == "NVIDIA H100 SXM 80GB (SIMULATED)"


def test_reimpact_with_each_override_by_hand(client, reported_as_h100):
    run = run_tiny_job(
        reported_as_h100, client, "impact.embodied=true", f"impact.lifetime_years={LIFETIME_YEARS}"
    )
    m = Measured(client, run.info.run_id)

    def reimpacted(*overrides: str) -> dict[str, float]:
        new = client.get_run(reimpact_run(client, run, list(overrides)))
        assert new.data.tags[Tag.REIMPACT_OF] == run.info.run_id
        return new.data.metrics

    cases = [
        ((), dict(embodied_years=LIFETIME_YEARS)),  # nothing changed: embodied carbon survives
        (("impact.carbon_intensity=120",), dict(ci=120.0, embodied_years=LIFETIME_YEARS)),
        (("impact.pue=1.1",), dict(pue=1.1, embodied_years=LIFETIME_YEARS)),
        (("impact.wue=0.9",), dict(wue=0.9, embodied_years=LIFETIME_YEARS)),
        (("impact.ewif=1.7",), dict(ewif=1.7, embodied_years=LIFETIME_YEARS)),
        (("impact.lifetime_years=6",), dict(embodied_years=6.0)),
        (("impact.embodied=false",), dict(embodied_years=None)),
        (("impact.attribution=net",), dict(attribution="net", embodied_years=LIFETIME_YEARS)),
    ]
    for overrides, changed in cases:
        attribution = changed.pop("attribution", "gross")
        metrics = reimpacted(*overrides)
        assert_figures(metrics, m, attribution, **changed)


def test_reimpact_adds_embodied_carbon_to_a_run_without_it(client, reported_as_h100):
    run = run_tiny_job(reported_as_h100, client)
    assert KEY["embodied_per_1k"][0] not in run.data.metrics
    m = Measured(client, run.info.run_id)
    new = client.get_run(
        reimpact_run(client, run, ["impact.embodied=true", "impact.lifetime_years=5", "impact.pue=1.5"])
    )
    assert_figures(new.data.metrics, m, "gross", pue=1.5, embodied_years=5.0)
