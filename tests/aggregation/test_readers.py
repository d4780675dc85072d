"""Reading a store: the SQL reader against search_runs, filters, the parent's files, refusals."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.synthetic_store import synthetic_store
from ecopipe.aggregate import AggregationError, aggregate, log_to_run
from ecopipe.aggregation.load import read_runs
from ecopipe.aggregation.render import markdown
from ecopipe.tracking import experiment as experiment_module
from ecopipe.tracking.experiment import ensure_experiment
from tests.aggregation.conftest import (
    EXPERIMENT,
    H100,
    T4,
    figures,
    grid,
)


def test_sql_reader_and_search_runs_return_identical_frames(runs, store, client, monkeypatch):
    monkeypatch.setattr(experiment_module, "SEARCH_PAGE", 2)  # search_runs reads 7 runs over several pages
    sweep = runs.sweep()
    logged = grid(runs, sweep)
    runs.job("mlp", "fp16", T4, figures(5.0), status="FAILED", error="RuntimeError: x", sweep=sweep)
    runs.job(
        "mlp", "bf16", T4, figures(7.0, quality=None) | {"quality.wer": 0.1}, region="FRA", batch_size=32
    )
    runs.job("foreign", metrics={"ess": math.nan, "energy_per_1k_gross_j": 1.0})
    experiment = [runs.experiment_id]
    ess = logged[("fp16", H100)]["ess"]
    # (sweep, filter, runs expected) over 7 runs: the parent, 4 sweep children, 2 others
    for sweep_id, filter_string, expected in [
        (None, None, 7),
        (sweep, None, 4),
        (None, f"metrics.ess > {ess * 0.99}", 3),  # not the run whose ESS is NaN
        (None, "tags.`ecopipe.precision` = 'fp16'", 2),
        (None, "tags.ecopipe.region != 'FRA'", 5),  # a run without the tag never matches
        (None, "attributes.status = 'FAILED'", 1),
        (None, "params.batch_size = '32'", 1),
        (None, "tags.`ecopipe.model` LIKE 'm%'", 2),
        (None, "tags.`ecopipe.model` LIKE 'M%'", 0),  # LIKE is case-sensitive
        (None, "tags.`ecopipe.error` IS NULL", 6),
        (sweep, "metrics.`quality.accuracy` >= 0.94", 2),
        (None, "attributes.run_name ILIKE 'MLP%'", 2),
    ]:
        sql = read_runs(client, experiment, sweep_id, filter_string, reader="sql")
        search = read_runs(client, experiment, sweep_id, filter_string, reader="search")
        assert len(sql) == expected, filter_string
        pd.testing.assert_frame_equal(sql, search, obj=f"{sweep_id} {filter_string}")
    everything = read_runs(client, experiment, reader="sql")
    assert len(everything) == 7 and "metrics.latency_p50_s" not in everything  # only what tables need
    assert math.isnan(everything.loc[everything["tags.ecopipe.model"] == "foreign", "metrics.ess"].item())


def test_a_filter_selects_runs(runs, store):
    grid(runs)
    result = aggregate(store, EXPERIMENT, filter_string="tags.`ecopipe.hardware` = 'NVIDIA T4'")
    assert list(result.jobs["precision"]) == ["int8"]
    assert list(result.tables["energy_gross"].columns) == ["model", "precision", T4]


def test_log_to_run_puts_files_and_tables_on_the_parent(runs, store, client, tmp_path):
    sweep = runs.sweep()
    logged = grid(runs, sweep)
    runs.job("mlp", status="FAILED", error="RuntimeError: x", sweep=sweep)
    result = aggregate(store, EXPERIMENT, sweep_id=sweep, out_dir=tmp_path)
    log_to_run(client, sweep, result)
    log_to_run(client, sweep, result)  # a re-aggregated sweep replaces its tables, never appends
    # Grouped: the summaries at the top, then tables/, plots/, data/.
    top = {a.path for a in client.list_artifacts(sweep)}
    assert top == {"summary.md", "summary.html", "tables", "plots", "data"}
    listed = {a.path for folder in ("tables", "plots", "data") for a in client.list_artifacts(sweep, folder)}
    assert {p.relative_to(tmp_path).as_posix() for p in result.files if p.parent != tmp_path} <= listed
    assert {"tables/energy_gross.json", "tables/failed.json", "plots/ess.png", "data/runs.csv"} <= listed
    # What log_table wrote, and the tag through which the MLflow UI lists it.
    table = pd.read_json(client.download_artifacts(sweep, "tables/ess.json", str(tmp_path)), orient="split")
    assert (
        '"path": "tables/ess.json", "type": "table"'
        in client.get_run(sweep).data.tags["mlflow.loggedArtifacts"]
    )
    # The table as the summary shows it: its 3 rows and the energy-source row, in words.
    assert len(table) == 4 and table.iloc[-1]["model"] == "energy source"
    assert table.loc[table["precision"] == "fp32", H100].item() == f"{logged[('fp32', H100)]['ess']:.4g}"
    # The numbers are exact in the CSV artifacts.
    csv = pd.read_csv(client.download_artifacts(sweep, "tables/ess.csv", str(tmp_path)))
    assert csv.loc[csv["precision"] == "fp32", H100].item() == pytest.approx(logged[("fp32", H100)]["ess"])


def test_log_to_run_writes_files_itself_when_none_were(runs, store, client):
    sweep = runs.sweep()
    runs.job(metrics=figures(100.0), sweep=sweep)
    result = aggregate(store, EXPERIMENT, sweep_id=sweep)
    assert result.files == []
    log_to_run(client, sweep, result)
    assert "summary.html" in {a.path for a in client.list_artifacts(sweep)}


def test_synthetic_store_logs_and_copies_consistent_runs(tmp_path, client):
    uri = f"sqlite:///{tmp_path / 'bench.db'}"
    sweep = synthetic_store(uri, 80, logged=34)
    result = aggregate(uri, "ecopipe-bench", sweep_id=sweep)
    assert len(result.jobs) == 80 and result.jobs["run_id"].is_unique
    # Run 32 of the 34 logged fails; copies cycle through the logged runs, so run 66 copies it.
    assert (result.jobs["status"] == "FAILED").sum() == 2
    # Each copy is its template, run for run and figure for figure, under a new id and later times.
    jobs = result.jobs.sort_values("start_time", ignore_index=True)
    assert jobs["start_time"].diff().dropna().eq(1000).all()
    same = [c for c in jobs.columns if c not in ("run_id", "start_time", "reused")]
    copies, templates = jobs.loc[34:, same], jobs.loc[[i % 34 for i in range(34, 80)], same]
    pd.testing.assert_frame_equal(copies.reset_index(drop=True), templates.reset_index(drop=True))
    assert set(jobs["status"][[32, 66]]) == {"FAILED"}
    bench = MlflowClient(uri)
    experiment = [bench.get_experiment_by_name("ecopipe-bench").experiment_id]
    pd.testing.assert_frame_equal(
        read_runs(bench, experiment, reader="sql"), read_runs(bench, experiment, reader="search")
    )


def test_unknown_experiment_and_missing_store_are_errors(store, client, tmp_path):
    ensure_experiment(client, store, EXPERIMENT)
    with pytest.raises(AggregationError, match="nope"):
        aggregate(store, "nope")
    with pytest.raises(AggregationError, match="Invalid comparator"):
        aggregate(store, EXPERIMENT, filter_string="metrics.ess >> 3")
    missing = tmp_path / "absent.db"
    with pytest.raises(AggregationError, match="no tracking store"):
        aggregate(f"sqlite:///{missing}", EXPERIMENT)
    assert not missing.exists()  # reading never creates a store


def test_markdown_escapes_pipes_and_leaves_blanks():
    text = markdown(pd.DataFrame({"model": ["a|b"], "x": [math.nan]}))
    assert text.splitlines() == ["| model | x |", "| --- | ---: |", "| a\\|b |  |"]
