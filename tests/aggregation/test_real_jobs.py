"""Aggregating runs that real jobs logged."""

from __future__ import annotations

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.synthetic_store import synthetic_store
from ecopipe.aggregate import aggregate
from ecopipe.aggregation.derived import precision_gain
from ecopipe.names import Tag
from tests.aggregation.conftest import (
    H100,
    Store,
    cell,
    figures,
)


def test_aggregates_a_real_job(make_cfg, client, store, tmp_path):
    from ecopipe.job import run_job

    outcome = run_job(make_cfg())
    result = aggregate(store, "ecopipe")
    run = client.get_run(outcome.run_id)
    hardware = run.data.tags[Tag.HARDWARE]
    energy = result.tables["energy_gross"]
    assert energy.loc[0, hardware] == run.data.metrics["energy_per_1k_gross_j"]
    assert result.tables["quality_accuracy"].loc[0, hardware] == run.data.metrics["quality.accuracy"]
    assert "estimated_specpower" in result.tables["energy_source"].loc[0, hardware]
    # The runs this file logs by hand carry only keys a real job logs, so they cannot drift from it.
    assert set(figures(1.0)) <= set(run.data.metrics)
    by_hand = client.get_run(Store(client, store).job(metrics=figures(1.0)))
    assert {k for k in by_hand.data.tags if not k.startswith("mlflow.")} <= set(run.data.tags)
    # The synthetic runs `make bench` aggregates fill every column a real job fills (its first run is
    # the same model on the same data) and log every metric a real job logs, but for the per-trial
    # series, the sampler's system metrics and the fit, which no table reads.
    bench = f"sqlite:///{tmp_path / 'bench.db'}"
    synthetic_store(bench, 1, logged=1)
    synthetic = aggregate(bench, "ecopipe-bench").jobs
    filled = result.jobs.columns[result.jobs.notna().all()]
    assert set(filled) <= set(synthetic.columns[synthetic.notna().all()])
    bench_client = MlflowClient(bench)
    bench_run = bench_client.get_run(synthetic.loc[0, "run_id"])
    unread = ("trial_", "system/", "fit_")
    assert {k for k in run.data.metrics if not k.startswith(unread)} <= set(bench_run.data.metrics)
    shared = (Tag.ESS_STATUS, Tag.STRATEGY, Tag.ATTRIBUTION, Tag.WEIGHTS)
    assert {k: bench_run.data.tags[k] for k in shared} == {k: run.data.tags[k] for k in shared}


def test_an_ess_that_is_not_defined_says_so_in_every_table_and_plot(make_cfg, client, store, tmp_path):
    from ecopipe.job import run_job

    # A zero-carbon grid: CO2e is 0, so ESS (parameters / CO2e) is not defined, in a real job's tags.
    undefined = run_job(make_cfg("impact.carbon_intensity=0"))
    defined = run_job(make_cfg("model=ridge"))
    hardware = client.get_run(undefined.run_id).data.tags[Tag.HARDWARE]
    assert "ess" not in client.get_run(undefined.run_id).data.metrics
    result = aggregate(store, "ecopipe", out_dir=tmp_path)
    ess = result.tables["ess"]
    assert cell(ess, hardware, model="logistic_regression") == "not defined"  # not blank, not dropped
    assert cell(ess, hardware, model="ridge") == client.get_run(defined.run_id).data.metrics["ess"]
    assert "| digits | logistic_regression | fp32 | not defined |" in (tmp_path / "summary.md").read_text()
    assert "not defined" in (tmp_path / "tables" / "ess.csv").read_text()
    assert (tmp_path / "plots" / "ess.png").exists()  # the defined value drawn, the other counted out
    # No gain over an fp32 ESS that is not defined, and none of one: each cell says which.
    frame = pd.DataFrame(
        {"model": ["m"] * 3, "precision": ["fp32", "fp16", "int8"], H100: ["not defined", 4.0, "not defined"]}
    )
    gain = precision_gain(frame, ["model", "precision"], [H100])
    assert list(gain[H100]) == ["not defined", "fp32 ESS not defined", "not defined"]
    frame.loc[0, H100] = 2.0
    assert list(precision_gain(frame, ["model", "precision"], [H100])[H100]) == [1.0, 2.0, "not defined"]
