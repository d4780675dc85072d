"""report.py's flat metrics, impact, ESS and headline figures and tags, by hand on round numbers."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from ecopipe import report
from ecopipe.config import Attribution, Phase
from ecopipe.monitor.energy import Power, Window
from ecopipe.monitor.sampler import Trace
from ecopipe.names import Tag, TagFamily
from ecopipe.results import IdleBaseline, ModelFacts
from ecopipe.stages.ess import run_ess
from ecopipe.stages.impact import resolve_factors, run_impact
from tests.report.conftest import FACTORS, result, two


def components(prefix: str, gpu: float, cpu: float, ram: float) -> dict[str, float]:
    return {
        f"{prefix}.gpu": gpu,
        f"{prefix}.cpu": cpu,
        f"{prefix}.ram": ram,
        f"{prefix}.total": gpu + cpu + ram,
    }


def band(name: str, a: float, b: float) -> dict[str, float]:
    """A per-trial figure of measured windows: its band is its mean less and plus its 95% CI; a gross
    energy's band stops at zero (two trials make a wide CI)."""
    mean, ci = two(a, b)[""], two(a, b)["ci95"]
    low = max(0.0, mean - ci) if "gross" in name else mean - ci
    return {name: mean, f"{name}_low": low, f"{name}_high": mean + ci}


def exact(values: dict[str, float]) -> dict[str, float]:
    """Run totals of measured windows: no CI, their band is the figure itself."""
    return {f"{k}{end}": v for k, v in values.items() for end in ("", "_low", "_high")}


def test_inference_metrics_by_hand():
    gross, net = two(105.0, 155.0), two(79.0, 116.0)  # J per 1,000: 10.5 and 15.5 J less 26 W x window
    throughput = two(1000.0, 100 / 0.15)
    expected = {
        "samples": 200,
        "tokens_in": 2000,
        "tokens_out": 800,
        "tokens": 800,  # a generating model: its generated tokens
        "trials": 2,
        "window_s": 0.25,
        "batch_size_used": 8,
        "throughput_per_s": throughput[""],
        "throughput_ci95_per_s": throughput["ci95"],
        "latency_p50_s": 0.025,
        "latency_p90_s": 0.037,
        "latency_p99_s": 0.0397,
        "load_s": 0.5,
        "load_energy_j": 1.25,
        "fit_s": 2.0,
        "fit_energy_j": 4.0,
        "parameters": 1_000_000,
        "effective_parameters": 500_000.0,
        "idle_measured": 1.0,
        **{f"energy_per_1k_gross{k and '_' + k}_j".replace("_cv_j", "_cv"): v for k, v in gross.items()},
        **{f"energy_per_1k_net{k and '_' + k}_j".replace("_cv_j", "_cv"): v for k, v in net.items()},
        # per trial, J per 1,000: gross gpu 80 and 120, cpu 20 and 30, ram 5 and 5; the idle's 20, 5
        # and 1 W over 0.1 and 0.15 s, per 1,000: 20 and 30, 5 and 7.5, 1 and 1.5
        **band("energy_per_1k_gross_j", 105.0, 155.0),
        **band("energy_per_1k_gross_j.gpu", 80.0, 120.0),
        **band("energy_per_1k_gross_j.cpu", 20.0, 30.0),
        **band("energy_per_1k_gross_j.ram", 5.0, 5.0),
        **band("energy_per_1k_gross_j.total", 105.0, 155.0),
        # the AI Energy Score's metric: the GPU's gross J per 1,000 in Wh (the job has a GPU source),
        # its band stopping at zero as every gross energy's does
        **{k: max(v, 0.0) for k, v in band("gpu_energy_wh_per_1k", 80.0 / 3600, 120.0 / 3600).items()},
        **band("energy_per_1k_net_j", 79.0, 116.0),
        **band("energy_per_1k_net_j.gpu", 60.0, 90.0),
        **band("energy_per_1k_net_j.cpu", 15.0, 22.5),
        **band("energy_per_1k_net_j.ram", 4.0, 3.5),
        **band("energy_per_1k_net_j.total", 79.0, 116.0),
        **exact(components("energy_gross_j", 20.0, 5.0, 1.0)),
        **exact(components("energy_net_j", 15.0, 3.75, 0.75)),
        **exact(components("energy_per_1k_tokens_gross_j", 25.0, 6.25, 1.25)),
        **exact({"energy_per_1k_tokens_gross_j": 32.5}),
        **exact(components("energy_per_1k_tokens_net_j", 18.75, 4.6875, 0.9375)),
        **exact({"energy_per_1k_tokens_net_j": 24.375}),
        **components("energy_idle_j", 5.0, 1.25, 0.25),
        **exact(components("idle_power_w", 20.0, 5.0, 1.0)),
        "quality.accuracy": 0.91234,
        "quality.loss": 0.3,
    }
    assert report.inference_metrics(result()) == pytest.approx(expected, rel=1e-12)
    # No baseline: gross only, no net or idle figure; no fit; a prefill window counts prompt tokens.
    bare = report.inference_metrics(
        result(
            baseline=None,
            fit=None,
            facts=ModelFacts(1, 1.0, "f", "w", phase=Phase.prefill),
        )
    )
    assert not [k for k in bare if "net" in k or k.startswith(("energy_idle", "idle_power", "fit_"))]
    assert bare["idle_measured"] == 0.0 and bare["tokens"] == 2000
    assert bare["energy_per_1k_tokens_gross_j"] == pytest.approx(26.0 * 1000 / 2000, rel=1e-12)
    # A sampler trace adds its size and the sampler's share of one core: 0.05 CPU s over a 0.25-s window.
    trace = Trace(pd.DataFrame({"t_s": [0.0, 0.1, 0.2]}), wall_s=0.25, sampler_cpu_s=0.05)
    traced = report.inference_metrics(result(trace=trace))
    assert {k: traced[k] for k in set(traced) - set(expected)} == {
        "monitor_overhead_frac": pytest.approx(0.2, rel=1e-12),
        "trace_samples": 3,
    }


def footprint(scope: str, joules: float) -> dict[str, float]:
    """At 400 g/kWh, PUE 1.5, on-site WUE 2 L/kWh, EWIF 3 L/kWh."""
    kwh = joules / 3.6e6
    return {
        f"energy_it_j_{scope}": joules,
        f"energy_facility_j_{scope}": joules * 1.5,
        f"co2e_g_{scope}": kwh * 1.5 * 400,
        f"water_onsite_l_{scope}": kwh * 2.0,
        f"water_offsite_l_{scope}": kwh * 1.5 * 3.0,
        f"water_l_{scope}": kwh * 2.0 + kwh * 1.5 * 3.0,
    }


def test_impact_ess_headline_and_tags_by_hand():
    metrics = report.inference_metrics(result())
    basis = report.energy_basis(metrics, Attribution.net)
    net = two(79.0, 116.0)
    assert (basis.energy_per_1k_j, basis.energy_per_1k_ci95_j) == pytest.approx((net[""], net["ci95"]))
    assert (basis.run_energy_j, basis.run_duration_s, basis.samples, basis.tokens) == pytest.approx(
        (19.5, 0.25, 200, 800)
    )
    gross = report.energy_basis(metrics, Attribution.gross)
    assert (gross.energy_per_1k_j, gross.run_energy_j) == pytest.approx((130.0, 26.0))
    # Without a CI (one trial) or tokens the basis says so: NaN and 0.
    lean = report.energy_basis(
        {k: v for k, v in metrics.items() if "ci95" not in k and k != "tokens"}, Attribution.net
    )
    assert math.isnan(lean.energy_per_1k_ci95_j) and lean.tokens == 0

    factors = resolve_factors(FACTORS, "WORLD", "datacenter")
    impact = run_impact(basis, factors, embodied_kgco2e=1000.0, lifetime_years=4.0)
    embodied = 1000.0 * 1000 * (0.25 / 200 * 1000) / (4.0 * 365.25 * 24 * 3600)
    per_1k = footprint("per_1k", net[""])
    expected = {
        "carbon_intensity_g_per_kwh": 400.0,
        "pue": 1.5,
        "wue_l_per_kwh": 2.0,
        "ewif_l_per_kwh": 3.0,
        "co2e_ci95_g_per_1k": net["ci95"] / 3.6e6 * 1.5 * 400,
        **per_1k,
        **footprint("per_inference", net[""] / 1000),
        **footprint("run", 19.5),
        **footprint("per_hour", 19.5 * 3600 / 0.25),
        **footprint("per_1k_tokens", 19.5 * 1000 / 800),
        "embodied_co2e_g_per_1k": embodied,
    }
    impact_metrics = report.impact_metrics(impact)
    assert impact_metrics == pytest.approx(expected, rel=1e-12)

    ess = run_ess(500_000.0, impact)
    ess_metrics = report.ess_metrics(ess)
    assert ess_metrics == pytest.approx(
        {
            "ess": 0.5 / per_1k["co2e_g_per_1k"],
            "ess_run": 0.5 / (19.5 / 3.6e6 * 1.5 * 400),
            "ecep_wh_per_mparam": net[""] / 3600 / 0.5,
            "effective_params_m": 0.5,
        },
        rel=1e-12,
    )
    everything = {**metrics, **impact_metrics, **ess_metrics}
    assert report.headline_metrics(everything) == {
        "headline/energy_J_per_1k": float(f"{net['']:.4g}"),
        "headline/co2e_mg_per_1k": float(f"{per_1k['co2e_g_per_1k'] * 1e3:.4g}"),
        "headline/water_mL_per_1k": float(f"{per_1k['water_l_per_1k'] * 1e3:.4g}"),
        "headline/ess_Mparams_per_gCO2e": float(f"{ess_metrics['ess']:.4g}"),
        "headline/throughput_per_s": float(f"{metrics['throughput_per_s']:.4g}"),
        "headline/accuracy": 0.9123,
    }
    # At a rounding edge (x.4999 in the unit shown) only the exact scale gives the 4 digits shown.
    edge = 1.2344999
    assert report.headline_metrics(
        {"energy_it_j_per_1k": edge * 1e3, "co2e_g_per_1k": edge, "water_l_per_1k": edge, "ess": 1.0}
    ) == {
        "headline/energy_J_per_1k": 1234.0,
        "headline/co2e_mg_per_1k": 1234.0,
        "headline/water_mL_per_1k": 1234.0,
        "headline/ess_Mparams_per_gCO2e": 1.0,
    }
    # A figure that is not finite (an ESS not defined, no throughput) is left out, not logged as NaN.
    undefined = report.headline_metrics({**everything, "ess": math.nan, "throughput_per_s": math.inf})
    assert set(undefined) == {
        "headline/energy_J_per_1k",
        "headline/co2e_mg_per_1k",
        "headline/water_mL_per_1k",
        "headline/accuracy",
    }
    assert report.impact_tags(impact) == {
        Tag.ESS_STATUS: "defined",
        Tag.REGION: "WORLD",
        Tag.REGION_NAME: factors.region_name,
        Tag.ATTRIBUTION: "net",
        Tag.CARBON_BASIS: "override",
        Tag.CARBON_YEAR: "not stated",
        Tag.WATER_BASIS: "unknown",
        TagFamily.FACTOR_SOURCE.of("carbon_intensity"): "override",
        TagFamily.FACTOR_SOURCE.of("pue"): "override",
        TagFamily.FACTOR_SOURCE.of("wue"): "override",
        TagFamily.FACTOR_SOURCE.of("ewif"): "override",
    }
    # CO2e of zero (a zero-carbon grid): ESS not defined, and the tag says why.
    clean = run_impact(basis, resolve_factors(replace(FACTORS, carbon_intensity=0.0), "WORLD", "datacenter"))
    assert report.impact_tags(clean)[Tag.ESS_STATUS] == "not defined: net CO2e <= 0"
    assert "embodied_co2e_g_per_1k" not in report.impact_metrics(clean)
    assert "co2e_g_per_1k_tokens" not in report.impact_metrics(run_impact(replace(basis, tokens=0), factors))


def test_source_tags_say_what_measured_each_component():
    assert report.source_tags(result()) == {
        TagFamily.ENERGY_SOURCE.of("gpu"): "nvml_counter",
        TagFamily.ENERGY_SOURCE.of("cpu"): "estimated_specpower",
        TagFamily.ENERGY_SOURCE.of("ram"): "estimated_rss",
        Tag.ENERGY_COMPLETE: "true",
        TagFamily.ENERGY_MEASURED.of("gpu"): "true",
        TagFamily.ENERGY_MEASURED.of("cpu"): "false",
        TagFamily.ENERGY_MEASURED.of("ram"): "false",
        TagFamily.ENERGY_RESOLUTION.of("gpu"): "0.1",
        TagFamily.ENERGY_RESOLUTION.of("cpu"): "0.01",
        TagFamily.ENERGY_RESOLUTION.of("ram"): "0",
        TagFamily.ENERGY_METHOD.of("cpu"): "8 W share",
        TagFamily.ENERGY_METHOD.of("ram"): "0.375 W/GB",
        Tag.NET_NEGATIVE: "false",
    }
    # A CUDA job whose GPU has no sensor is incomplete; a CPU job without one is complete.
    blind = {"gpu": "none", "cpu": "rapl", "ram": "estimated_rss"}
    assert report.source_tags(result(sources=blind))[Tag.ENERGY_COMPLETE] == "false"
    assert report.source_tags(result(sources=blind, device="cpu"))[Tag.ENERGY_COMPLETE] == "true"
    # Windows that drew less than idle are flagged; without a baseline there is no flag at all.
    low = result(baseline=IdleBaseline(Window(Power(200.0, 0.0, 0.0), 1.0), None))
    assert report.source_tags(low)[Tag.NET_NEGATIVE] == "true"
    assert Tag.NET_NEGATIVE not in report.source_tags(result(baseline=None))


def test_net_under_a_shared_counter_is_the_share_of_the_machine_less_its_idle_by_hand():
    """Trials at a 50% share of a RAPL package: the machine's idle baseline (5 W of cpu) is charged at
    the same share, so net cpu = share x (machine - idle x seconds), trial by trial; gpu and ram whole."""
    shared = tuple(
        replace(
            t,
            window=replace(
                t.window,
                energy=t.window.energy.with_share(0.5, ("cpu",)),
                job_share=0.5,
                shared=("cpu",),
                machine=t.window.energy,
            ),
        )
        for t in result().trials
    )
    split = result(trials=shared)
    # Trial 1: machine cpu 2 J over 0.1 s, trial 2: 3 J over 0.15 s; idle 20 W gpu, 5 W cpu, 1 W ram.
    nets = [split.trial_energy(t, Attribution.net) for t in split.trials]
    assert [n.cpu for n in nets] == pytest.approx([0.5 * (2.0 - 5.0 * 0.1), 0.5 * (3.0 - 5.0 * 0.15)])
    assert [n.gpu for n in nets] == pytest.approx([8.0 - 20.0 * 0.1, 12.0 - 20.0 * 0.15])
    assert split.idle.cpu == pytest.approx(0.5 * 5.0 * 0.25) and split.idle.ram == pytest.approx(0.25)
    metrics = report.inference_metrics(split)
    assert metrics["energy_idle_j.cpu"] == pytest.approx(0.625) and metrics["idle_power_w.cpu"] == 5.0
    assert metrics["job_cpu_share"] == 0.5 and metrics["energy_machine_j.cpu"] == pytest.approx(5.0)
    assert metrics["energy_net_j.cpu"] == pytest.approx(0.5 * (5.0 - 5.0 * 0.25))


def test_rates_read_per_second_minute_or_hour_and_unresolved_figures_say_so():
    # "621 m inferences/s" read as 621 million: a rate under one a second moves to a longer span.
    from ecopipe.aggregation.render import shown
    from ecopipe.units import rate

    assert rate(450_000, "inferences") == "450 k inferences/s"
    assert rate(0.621, "inferences") == "37.3 inferences/min"
    assert rate(0.0041, "inferences") == "14.8 inferences/h"
    assert rate(1e-5, "inferences") == "0.036 inferences/h"
    keys = {"model": ["svc", "ridge", "mlp"], "precision": ["fp32", "fp32", "fp32"]}
    table = pd.DataFrame(keys | {"xeon": [0.621, 2.5e5, 10.0]})
    ci = pd.DataFrame(keys | {"xeon": [0.0083, 5e3, 6.0]})
    for frame in (table, ci):
        frame.attrs["keys"] = list(keys)  # as the tables' pivot records its row key
    cells = shown({"throughput": table, "throughput_ci95": ci})["throughput"]["xeon"].tolist()
    assert cells[:2] == ["37.3/min ±0.498/min", "250 k/s ±5 k/s"]  # a CI in its figure's span
    # A CI over half the figure: the figure is not resolved, and the cell says so.
    assert cells[2] == "10/s ±6/s UNRESOLVED (95% CI over half the figure)"
    # The tables' notes count such cells and say what narrows them.
    from ecopipe.aggregation.tables import unresolved_cells

    assert unresolved_cells({"throughput": table, "throughput_ci95": ci}) == 1
    ci["xeon"] = [0.4, 1.3e5, 6.0]  # 0.4 is over half of 0.621, 1.3e5 over half of 2.5e5
    assert unresolved_cells({"throughput": table, "throughput_ci95": ci}) == 3
    assert unresolved_cells({"throughput": table}) == 0  # no CI: nothing to judge
