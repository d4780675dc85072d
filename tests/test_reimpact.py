"""Re-impact of logged runs, fast: the runs are the synthetic bench's, which carry every key a real job
logs (tests/aggregation/ checks them against a real job), in a real SQLite MLflow store.

The figures of a re-impact of a real job, with each override, are checked by hand in
tests/test_figures_end_to_end.py; these tests cover what the module does around them in milliseconds,
for the mutation run (`make mutate`).
"""

from __future__ import annotations

import logging

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.synthetic_store import synthetic_store
from ecopipe import summary
from ecopipe.config import ConfigError
from ecopipe.names import Tag, TagFamily
from ecopipe.reference import resolve_region, tier_pue, tier_wue
from ecopipe.reimpact import main, reimpact_run
from ecopipe.tracking import experiment as experiment_module

FRA_G_PER_KWH = 44.18  # Ember 2025, lifecycle (ecopipe/data/grid_carbon_intensity.csv)
EXPERIMENT = "ecopipe-bench"


@pytest.fixture
def bench(tmp_path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'bench.db'}"
    synthetic_store(uri, 2, EXPERIMENT, logged=2)
    return uri, MlflowClient(uri)


def job_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([experiment], "attributes.status = 'FINISHED'")
    jobs = [r for r in runs if Tag.KIND not in r.data.tags and Tag.REIMPACT_OF not in r.data.tags]
    return sorted(jobs, key=lambda r: r.info.start_time)


def copy_without(client: MlflowClient, run, param: str):
    """A copy of `run` that never logged `param` (MLflow cannot delete a param)."""
    new = client.create_run(run.info.experiment_id)
    client.log_batch(
        new.info.run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in run.data.metrics.items()],
        params=[Param(k, v) for k, v in run.data.params.items() if k != param],
        tags=[RunTag(k, v) for k, v in run.data.tags.items() if not k.startswith("mlflow.")],
    )
    client.set_terminated(new.info.run_id, "FINISHED")
    return client.get_run(new.info.run_id)


def test_reimpact_keeps_the_run_and_its_settings_and_moves_only_what_is_overridden(bench):
    _, client = bench
    first = job_runs(client)[0]
    # The live-process tags a real job sets, which a re-impact must not carry (nor its config hash).
    for key, value in {"ecopipe.host": "vm", Tag.PID: "7", Tag.PID_STARTED: "1.0"}.items():
        client.set_tag(first.info.run_id, key, value)
    original = client.get_run(first.info.run_id)
    o = original.data.metrics
    # Nothing overridden: the original's settings (its own factor overrides) give its figures back.
    same = client.get_run(reimpact_run(client, original, []))
    for key in ("co2e_g_per_1k", "water_l_per_1k", "ess", "ess_run", "ecep_wh_per_mparam", "co2e_g_per_hour"):
        assert same.data.metrics[key] == pytest.approx(o[key], rel=1e-12), key
    # In France with its grid: the original's WUE override travels, the grid is FRA's, the PUE its tier's.
    france = client.get_run(reimpact_run(client, original, ["region=FRA", "impact.carbon_intensity=null"]))
    expected = o["energy_per_1k_gross_j"] / 3.6e6 * tier_pue("datacenter").value * FRA_G_PER_KWH
    assert france.data.metrics["co2e_g_per_1k"] == pytest.approx(expected, rel=1e-12)
    assert france.info.experiment_id == original.info.experiment_id
    assert france.info.run_name == f"{original.info.run_name}@FRA"
    assert france.info.status == "FINISHED"
    tags, params = france.data.tags, france.data.params
    assert tags[Tag.REIMPACT_OF] == original.info.run_id and tags[Tag.REGION] == "FRA"
    assert (
        tags[TagFamily.FACTOR_SOURCE.of("carbon_intensity")] != "override"
        and tags[TagFamily.FACTOR_SOURCE.of("wue")] == "override"
    )
    assert not {Tag.CONFIG_HASH, Tag.HOST, Tag.PID, Tag.PID_STARTED} & set(tags)
    assert tags[Tag.MODEL] == original.data.tags[Tag.MODEL]
    assert params["region"] == "FRA" and params["impact.carbon_intensity"] == "None"
    assert params["impact.wue"] == "1.8" and params["model.name"] == original.data.params["model.name"]
    # Inference figures are copied; impact figures recomputed (never the original's, kept by mistake).
    for key in ("energy_per_1k_gross_j", "samples", "window_s", "quality.accuracy", "effective_parameters"):
        assert france.data.metrics[key] == o[key], key
    assert france.data.metrics["carbon_intensity_g_per_kwh"] == FRA_G_PER_KWH
    # The run list shows it like a job: its compact answer (France's CO2e) and its source.
    answer = summary.compact_answer(france.data.metrics, original.data.tags[Tag.FIGURES])
    assert tags[Tag.NOTE].startswith(f"{answer}\n\nRe-impact of run {original.info.run_id}")
    assert tags[Tag.SOURCE_NAME] == "ecopipe"
    # A re-impact of the re-impact with only a PUE keeps France: the run's region is a setting too.
    again = client.get_run(reimpact_run(client, france, ["impact.pue=1.2"]))
    assert again.data.params["region"] == "FRA" and again.data.tags[Tag.REGION] == "FRA"
    expected = o["energy_per_1k_gross_j"] / 3.6e6 * 1.2 * FRA_G_PER_KWH
    assert again.data.metrics["co2e_g_per_1k"] == pytest.approx(expected, rel=1e-12)
    # A zero-carbon grid: no ESS, and no headline ESS or band kept from the original by mistake.
    clean = client.get_run(reimpact_run(client, original, ["impact.carbon_intensity=0"])).data.metrics
    assert not {k for k in clean if k.startswith(("ess", "headline/ess_"))}
    assert clean["headline/co2e_mg_per_1k"] == 0.0


def test_reimpact_takes_the_runs_tier_and_a_missing_region_is_the_world_grid(bench):
    """A grid zone has no facility figures: PUE and WUE come from the tier the run logged, a data
    centre's when it logged none. A run that logged no region is re-impacted on the WORLD grid."""
    _, client = bench
    run_id = job_runs(client)[0].info.run_id
    table_factors = ["impact.carbon_intensity=null", "impact.pue=null", "impact.wue=null", "impact.ewif=null"]

    def facility_factors() -> tuple[float, float]:
        metrics = client.get_run(reimpact_run(client, client.get_run(run_id), table_factors)).data.metrics
        return metrics["pue"], metrics["wue_l_per_kwh"]

    def tier_factors(tier: str) -> tuple[float, float]:
        return tier_pue(tier).value, tier_wue(tier).value

    assert tier_factors("desktop") != tier_factors("datacenter")
    client.set_tag(run_id, Tag.TIER, "desktop")
    assert facility_factors() == tier_factors("desktop")
    client.delete_tag(run_id, Tag.TIER)
    assert facility_factors() == tier_factors("datacenter")
    regionless = copy_without(client, client.get_run(run_id), "region")
    world = client.get_run(reimpact_run(client, regionless, table_factors))
    assert world.data.params["region"] == "WORLD" and world.data.tags[Tag.REGION] == "WORLD"
    assert world.data.metrics["carbon_intensity_g_per_kwh"] == resolve_region("WORLD").carbon_intensity.value


def test_reimpact_refuses_what_it_cannot_recompute(bench):
    _, client = bench
    original = job_runs(client)[0]
    with pytest.raises(ConfigError) as refused:
        reimpact_run(client, original, ["model.name=x", "seed=1"])
    assert str(refused.value) == (
        "model, seed: re-impact takes only region=... and impact.<key>=... (keys: carbon_intensity, pue, "
        "wue, ewif, attribution, embodied, lifetime_years)."
    )
    # A run that failed before any figure: nothing to recompute, and the message says what is missing.
    experiment = original.info.experiment_id
    failed = client.create_run(experiment, tags={"ecopipe.model": "m"})
    client.set_terminated(failed.info.run_id, "FAILED")
    with pytest.raises(ConfigError) as refused:
        reimpact_run(client, client.get_run(failed.info.run_id), ["impact.attribution=net"])
    assert str(refused.value) == (
        f"run {failed.info.run_id} (FAILED) has no energy_per_1k_net_j, effective_parameters, window_s, "
        "samples: only a finished job run can be re-impacted (net needs an idle baseline)."
    )
    with pytest.raises(ConfigError) as refused:
        reimpact_run(client, client.get_run(failed.info.run_id), [])
    assert str(refused.value).endswith("samples: only a finished job run can be re-impacted.")


def test_reimpact_cli_recomputes_every_finished_job_of_an_experiment_once(bench, capsys, monkeypatch):
    uri, client = bench
    monkeypatch.setattr(experiment_module, "SEARCH_PAGE", 1)  # the experiment's runs come over several pages
    originals = job_runs(client)
    reimpact_run(client, originals[0], ["region=FRA", "impact.carbon_intensity=null"])  # not redone
    # A job that failed after its first figures: not finished, so not re-impacted.
    failed = client.create_run(originals[0].info.experiment_id)
    client.log_metric(failed.info.run_id, "energy_per_1k_gross_j", 1.0)
    client.set_terminated(failed.info.run_id, "FAILED")
    assert main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "impact.pue=1.2"]) == 0
    printed = capsys.readouterr().out.split()
    made = [client.get_run(run_id) for run_id in printed]
    assert sorted(r.data.tags[Tag.REIMPACT_OF] for r in made) == sorted(r.info.run_id for r in originals)
    assert {r.data.params["impact.pue"] for r in made} == {"1.2"}
    assert main(["--run-id", originals[1].info.run_id, "--tracking-uri", uri, "region=FRA"]) == 0
    assert (
        client.get_run(capsys.readouterr().out.strip()).data.tags[Tag.REIMPACT_OF] == originals[1].info.run_id
    )
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert help_text.startswith("usage: python -m ecopipe.reimpact [-h] (--run-id RUN_ID | --experiment")
    for phrase in (
        "`python -m ecopipe.reimpact`: recompute impact and ESS of logged runs for another grid, PUE or",
        "--run-id RUN_ID one run to recompute",
        "--experiment EXPERIMENT every finished job run of this experiment",
        "--tracking-uri TRACKING_URI default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here",
        "overrides region=ZONE and impact.<key>=VALUE",
    ):
        assert phrase in help_text, phrase
    with pytest.raises(SystemExit) as no_target:
        main(["--tracking-uri", uri, "region=FRA"])
    assert no_target.value.code == 2
    assert "one of the arguments --run-id --experiment is required" in capsys.readouterr().err
    assert main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (
        "ecopipe.reimpact: error: --experiment nope: no such experiment in this tracking store.\n"
    )


def test_reimpact_command_prints_the_new_run_and_logs_its_figures(bench, capsys, monkeypatch):
    uri, client = bench
    original = job_runs(client)[0].info.run_id
    # A root logger as a fresh `python -m ecopipe.reimpact` finds it (pytest's capture handlers would
    # turn main's logging.basicConfig into a no-op); restored after the test.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    assert main(["--run-id", original, "--tracking-uri", uri, "region=FRA"]) == 0
    printed = capsys.readouterr()
    new = client.get_run(printed.out.strip())
    figures = new.data.metrics
    # The CO2e with its band, and what the energy behind it is (the run's ecopipe.figures tag).
    low, high = figures["co2e_g_per_1k_low"], figures["co2e_g_per_1k_high"]
    co2e = f"{figures['co2e_g_per_1k']:.4g} gCO2e ({low:.3g}-{high:.3g})"
    assert (
        f"re-impact of {original} in FRA: {co2e} per 1,000 inferences, {new.data.tags[Tag.FIGURES]}; "
        f"ESS {figures['ess']:.4g} (run {new.info.run_id})"
    ) in printed.err.splitlines()
