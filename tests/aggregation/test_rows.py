"""A table's row is one config: real jobs aggregated through `python -m ecopipe.aggregate`, as a user runs it.

Runs share a row only when their logged configs differ in nothing but the repeat keys (seed) and keys
that change no result (rerun, tracking...); any other key in which they differ is a column of the row
key, whatever its name.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ecopipe.aggregation.rows import NOT_SET
from ecopipe.names import Tag
from tests.aggregation.conftest import EXPERIMENT as STORE_EXPERIMENT
from tests.aggregation.conftest import figures
from tests.conftest import run_cli

EXPERIMENT = "ecopipe"  # the experiment jobs log to by default


def run_jobs(make_cfg, *configs: tuple[str, ...]) -> list[str]:
    from ecopipe.job import run_job

    return [run_job(make_cfg(*overrides)).run_id for overrides in configs]


def aggregated(store: str, out: Path, experiment: str = EXPERIMENT) -> dict[str, pd.DataFrame]:
    """`python -m ecopipe.aggregate` over the experiment; its CSV tables by name."""
    args = ["--experiment", experiment, "--tracking-uri", store, "--out", str(out)]
    done = run_cli(*args, cwd=out.parent, module="ecopipe.aggregate")
    assert done.returncode == 0, done.stderr
    return {path.stem: pd.read_csv(path, dtype=str) for path in (out / "tables").glob("*.csv")}


def hardware_of(client, run_id: str) -> str:
    return client.get_run(run_id).data.tags[Tag.HARDWARE]


def test_two_configs_that_differ_in_an_unlisted_key_are_two_rows_not_repeats(
    make_cfg, client, store, tmp_path
):
    small, large = run_jobs(make_cfg, ("dataset.limit=100",), ("dataset.limit=200",))
    tables = aggregated(store, tmp_path / "out")
    hardware = hardware_of(client, small)
    energy = tables["energy_gross"]
    assert list(energy.columns) == ["model", "precision", "dataset.limit", hardware]
    assert list(energy["dataset.limit"]) == ["100", "200"]
    for run_id, limit in ((small, "100"), (large, "200")):
        logged = client.get_run(run_id).data.metrics["energy_per_1k_gross_j"]
        assert float(energy.loc[energy["dataset.limit"] == limit, hardware].item()) == pytest.approx(logged)
    assert not any(name.endswith(("_runs", "_spread")) for name in tables)  # no repeats, no spread
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"| model | precision | dataset.limit | {hardware} |" in summary
    assert "(runs: " not in summary
    assert "rows: one per config, model x precision x dataset.limit" in summary
    # Only the params that tell runs apart are read: the config keys both jobs share stay in the store.
    runs = pd.read_csv(tmp_path / "out" / "data" / "runs.csv")
    assert "params.dataset.limit" in runs and "params.monitor.trials" not in runs


def test_every_key_two_configs_differ_in_is_shown_not_just_one_that_separates_them(
    make_cfg, client, store, tmp_path
):
    """Two protocol keys changed together: either would tell the runs apart, and the row shows both,
    so that no reader takes the second for the same in both rows."""
    quick, slow = run_jobs(make_cfg, (), ("monitor.min_iterations=2", "monitor.warmup_batches=3"))
    energy = aggregated(store, tmp_path / "out")["energy_gross"]
    hardware = hardware_of(client, quick)
    assert list(energy.columns) == [
        "model",
        "precision",
        "monitor.min_iterations",
        "monitor.warmup_batches",
        hardware,
    ]
    assert energy[["monitor.min_iterations", "monitor.warmup_batches"]].values.tolist() == [
        ["1", "1"],
        ["2", "3"],
    ]


def test_configs_that_differ_on_two_machines_are_two_rows_not_one_row_of_two_columns(
    make_cfg, client, store, tmp_path
):
    """Another CPU (a what-if by hardware.cpu_model: its own column) with another data limit: side by
    side in one row they would read as one config on two machines."""
    here, there = run_jobs(
        make_cfg,
        ("dataset.limit=100",),
        ("dataset.limit=200", "hardware.cpu_model=AMD EPYC 7763 64-Core Processor"),
    )
    energy = aggregated(store, tmp_path / "out")["energy_gross"]
    columns = [hardware_of(client, run_id) for run_id in (here, there)]
    assert "hardware.cpu_model" not in energy  # it makes the column: not a key of the row as well
    assert list(energy["dataset.limit"]) == ["100", "200"]
    assert energy[columns].notna().values.tolist() == [[True, False], [False, True]]


def test_a_key_one_run_adds_is_a_column_and_keys_that_follow_the_model_are_not(
    make_cfg, client, store, tmp_path
):
    # ridge differs from logistic_regression in every model.* and dataset.* key: the model says it all.
    plain, tuned, ridge = run_jobs(make_cfg, (), ("+model.params.C=0.5",), ("model=ridge",))
    tables = aggregated(store, tmp_path / "out")
    hardware = hardware_of(client, plain)
    energy = tables["energy_gross"]
    assert list(energy.columns) == ["model", "dataset", "precision", "model.params.C", hardware]
    rows = energy.set_index(["model", "model.params.C"])[hardware].astype(float)
    assert rows.index.tolist() == [
        ("logistic_regression", "0.5"),
        ("logistic_regression", NOT_SET),
        ("ridge", NOT_SET),
    ]
    for run_id, key in ((plain, ("logistic_regression", NOT_SET)), (tuned, ("logistic_regression", "0.5"))):
        assert rows[key] == pytest.approx(client.get_run(run_id).data.metrics["energy_per_1k_gross_j"])
    assert not any(name.endswith("_runs") for name in tables)


def test_seeds_of_one_config_are_repeats_in_one_cell(make_cfg, client, store, tmp_path):
    run_ids = run_jobs(make_cfg, ("seed=0",), ("seed=1",), ("seed=2",))
    tables = aggregated(store, tmp_path / "out")
    hardware = hardware_of(client, run_ids[0])
    for name in ("energy_gross", "energy_gross_runs", "energy_gross_spread"):
        assert list(tables[name].columns) == ["model", "precision", hardware], name  # no seed column
        assert len(tables[name]) == 1, name
    assert tables["energy_gross_runs"][hardware].astype(float).item() == 3
    # The cell is the latest seed's run, the other two superseded.
    latest = client.get_run(run_ids[-1]).data.metrics["energy_per_1k_gross_j"]
    assert float(tables["energy_gross"][hardware].item()) == pytest.approx(latest)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "(runs: 3, CV " in summary and "2 earlier runs superseded" in summary


@pytest.mark.parametrize("reader", ["sql", "search"])
def test_a_reimpact_with_another_carbon_intensity_is_its_own_row(tmp_path, reader):
    """A re-impact drops the config hash but keeps the run's params, overrides applied: it is a job
    run whose config differs from the measured run's in impact.carbon_intensity, not a repeat of it."""
    from mlflow.tracking import MlflowClient

    from bench.synthetic_store import synthetic_store
    from ecopipe.aggregate import aggregate
    from ecopipe.reimpact import reimpact_run

    uri = f"sqlite:///{tmp_path / 'bench.db'}"
    sweep = synthetic_store(uri, 1, logged=1)
    client = MlflowClient(uri)
    (measured,) = client.search_runs(
        [client.get_experiment_by_name("ecopipe-bench").experiment_id], f"tags.`ecopipe.sweep_id` = '{sweep}'"
    )
    reimpact_run(client, measured, ["impact.carbon_intensity=100"])
    result = aggregate(uri, "ecopipe-bench", reader=reader)
    co2e = result.tables["co2e"]
    assert list(co2e.columns[:3]) == ["model", "precision", "impact.carbon_intensity"]
    assert list(co2e["impact.carbon_intensity"]) == ["100.0", "475.0"]
    assert "co2e_runs" not in result.tables and not any("superseded" in note for note in result.notes)


def test_the_ess_table_keeps_each_data_sets_rows_together_the_data_set_first():
    """ESS rewards size: its table is read within one data set, so those rows stand together."""
    from ecopipe.aggregation.pivot import KEYS, by_dataset, key_columns

    table = pd.DataFrame({"model": ["a", "b", "c", "d"], "dataset": ["x", "y", "x", "y"],
                          "precision": ["fp32"] * 4, "cpu": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    table.attrs[KEYS] = ["model", "dataset", "precision"]
    grouped = by_dataset(table)
    assert key_columns(grouped) == ["dataset", "model", "precision"]
    assert list(grouped.columns) == ["dataset", "model", "precision", "cpu"]
    assert grouped[["dataset", "model", "cpu"]].values.tolist() == [
        ["x", "a", 1.0],
        ["x", "c", 3.0],
        ["y", "b", 2.0],
        ["y", "d", 4.0],
    ]
    table.attrs[KEYS] = ["model", "precision"]  # one data set: no column for it, nothing moves
    assert by_dataset(table.drop(columns="dataset")).equals(table.drop(columns="dataset"))


def test_a_key_logged_none_is_the_config_of_a_run_logged_before_the_key_existed(runs, client, tmp_path):
    # A new config key with no value (model._target_ where the package's family runs) is logged "None";
    # a run logged before the key existed lacks it. Both ran the same config: one row. A value is a row.
    before = runs.job(metrics=figures(100.0))
    after = runs.job(metrics=figures(90.0))
    client.log_param(after, "model._target_", "None")
    other = runs.job(metrics=figures(50.0))
    client.log_param(other, "model._target_", "toy.Family")
    tables = aggregated(runs.uri, tmp_path / "out", STORE_EXPERIMENT)
    energy = tables["energy_gross"].set_index("model._target_")
    assert energy.index.tolist() == [NOT_SET, "toy.Family"]
    runs_table = tables["energy_gross_runs"].set_index("model._target_")
    assert runs_table.loc[NOT_SET].iloc[-1] == "2" and before != after
