"""Aggregation over a real SQLite MLflow store holding runs logged the way jobs log them."""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

from bench.synthetic_store import synthetic_store
from ecopipe import tracking
from ecopipe.aggregate import AggregationError, aggregate, log_to_run, main
from ecopipe.aggregation.load import read_runs
from ecopipe.aggregation.render import markdown
from ecopipe.aggregation.tables import precision_gain
from ecopipe.config import CONFIG_DIR
from ecopipe.tracking import current_user, ensure_experiment, sqlite_path
from tests.conftest import FAST, run_cli

EXPERIMENT = "agg"
H100, T4 = "NVIDIA H100 SXM 80GB", "NVIDIA T4"
GPU_SOURCES = {"gpu": "nvml_counter", "cpu": "rapl", "ram": "none"}
CPU_SOURCES = {"gpu": "none", "cpu": "estimated_specpower", "ram": "none"}
MEASURED = {"nvml_counter", "nvml_power_polling", "rapl", "rapl_job_share", "nvml_counter_whole_gpu"}


def figures(energy: float, quality: float | None = 0.9, params: float = 650.0) -> dict[str, float]:
    """A job's headline metrics, related by the impact and ESS formulas (WORLD-like factors)."""
    co2e = energy / 3.6e6 * 1.5 * 480.0
    metrics = {
        "energy_per_1k_gross_j": energy,
        "energy_per_1k_net_j": energy * 0.7,
        "energy_per_1k_gross_ci95_j": energy * 0.05,
        "co2e_g_per_1k": co2e,
        "water_l_per_1k": energy / 3.6e6 * 4.0,
        "ess": params / 1e6 / co2e,
        "ess_run": params / 1e6 / co2e / 3,
        "throughput_per_s": 1e5 / energy,
        "window_s": 2.5,
        "samples": 1000.0,
        "effective_parameters": params,
        "latency_p50_s": 0.001,  # logged by every job, not read by aggregation
    }
    if quality is not None:
        metrics["quality.accuracy"] = quality
    return metrics


class Store:
    """Logs runs with MlflowClient exactly as a job, a sweep callback and a re-impact do."""

    def __init__(self, client, uri: str) -> None:
        self.client, self.uri = client, uri
        self.experiment_id = ensure_experiment(client, uri, EXPERIMENT)
        self.clock = 1_700_000_000_000

    def _start(self) -> int:
        self.clock += 1000
        return self.clock

    def sweep(self) -> str:
        """An ended sweep of this user, as `python -m ecopipe -m` leaves one."""
        tags = {"ecopipe.kind": "sweep", "mlflow.user": current_user()}
        run = self.client.create_run(self.experiment_id, start_time=self._start(), tags=tags)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def job(
        self,
        model: str = "logistic_regression",
        precision: str = "fp32",
        hardware: str = H100,
        metrics: dict[str, float] | None = None,
        *,
        dataset: str = "digits",
        region: str = "WORLD",
        sources: dict[str, str] | None = None,
        sweep: str | None = None,
        status: str = "FINISHED",
        error: str | None = None,
        batch_size: int = 8,
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        sources = sources or GPU_SOURCES
        tags = {
            "ecopipe.model": model,
            "ecopipe.dataset": dataset,
            "ecopipe.precision": precision,
            "ecopipe.hardware": hardware,
            "ecopipe.hardware_key": hardware.split()[1].lower() if " " in hardware else hardware,
            "ecopipe.region": region,
            "ecopipe.attribution": "gross",
            "ecopipe.config_hash": f"{model}-{dataset}-{precision}-{hardware}-{region}",
            **{f"energy_source.{c}": s for c, s in sources.items()},
            **{f"energy_measured.{c}": str(s in MEASURED).lower() for c, s in sources.items()},
            **(extra_tags or {}),
        }
        if sweep:
            tags |= {"mlflow.parentRunId": sweep, "ecopipe.sweep_id": sweep}
        if error:
            tags |= {"ecopipe.error": error, "ecopipe.status": "failed"}
        start = self._start()
        run_id = self.client.create_run(
            self.experiment_id,
            start_time=start,
            tags=tags,
            run_name=f"{model}-{dataset}-{precision}-bs{batch_size}",
        ).info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, start, 0) for k, v in (metrics or {}).items()],
            params=[Param("batch_size", str(batch_size)), Param("model.name", model)],
        )
        self.client.set_terminated(run_id, status=status, end_time=start + 500)
        return run_id


@pytest.fixture
def runs(client, store) -> Store:
    return Store(client, store)


def cell(table: pd.DataFrame, column: str, **key: str) -> float:
    rows = table
    for name, value in key.items():
        rows = rows[rows[name] == value]
    assert len(rows) == 1, f"{key}: {len(rows)} rows"
    return rows[column].iloc[0]


def grid(runs: Store, sweep: str | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """fp32 and fp16 on an H100; int8 alone on a T4 (no fp32 there to compare with)."""
    logged = {
        ("fp32", H100): figures(120.0, 0.95),
        ("fp16", H100): figures(70.0, 0.94),
        ("int8", T4): figures(310.0, 0.91),
    }
    for (precision, hardware), metrics in logged.items():
        runs.job(precision=precision, hardware=hardware, metrics=metrics, sweep=sweep)
    return logged


def test_tables_hold_the_childrens_metrics_one_column_per_hardware(runs, store):
    sweep = runs.sweep()
    logged = grid(runs, sweep)
    result = aggregate(store, EXPERIMENT, sweep_id=sweep)
    assert len(result.jobs) == 3  # the sweep's parent run is not a job
    for name, metric in {
        "energy_gross": "energy_per_1k_gross_j",
        "energy_net": "energy_per_1k_net_j",
        "co2e": "co2e_g_per_1k",
        "water": "water_l_per_1k",
        "ess": "ess",
        "throughput": "throughput_per_s",
        "quality_accuracy": "quality.accuracy",
    }.items():
        table = result.tables[name]
        assert list(table.columns) == ["model", "precision", H100, T4], name
        assert list(table["precision"]) == ["fp32", "fp16", "int8"], name  # fp32 first, then narrower
        for (precision, hardware), metrics in logged.items():
            assert cell(table, hardware, precision=precision) == metrics[metric], (name, precision)
        assert math.isnan(cell(table, T4, precision="fp32"))  # never run: blank, not zero


def test_precision_gain_is_the_exact_ess_ratio_and_says_when_there_is_no_fp32(runs, store):
    logged = grid(runs)
    result = aggregate(store, EXPERIMENT)
    gain = result.tables["precision_gain_ess"]
    assert gain[["model", "precision"]].equals(result.tables["ess"][["model", "precision"]])  # same rows
    assert cell(gain, H100, precision="fp16") == logged[("fp16", H100)]["ess"] / logged[("fp32", H100)]["ess"]
    assert cell(gain, H100, precision="fp32") == 1.0
    assert cell(gain, T4, precision="int8") == "no fp32 run to compare with"  # no fp32 on the T4
    assert math.isnan(cell(gain, T4, precision="fp16"))  # no fp16 run on the T4: blank


def test_energy_sources_sit_beside_every_energy_figure(runs, store, tmp_path):
    runs.job("mlp", hardware=H100, metrics=figures(100.0), sources=GPU_SOURCES)
    runs.job("mlp", hardware="Intel Xeon", metrics=figures(400.0), sources=CPU_SOURCES)
    runs.job("mlp", hardware="Simulated GPU", metrics=figures(50.0), sources={"gpu": "fake", "cpu": "rapl"})
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path / "out")
    sources = result.tables["energy_source"]
    assert cell(sources, H100, model="mlp") == "nvml_counter+rapl"
    assert cell(sources, "Intel Xeon", model="mlp") == "estimated_specpower"
    assert cell(sources, "Simulated GPU", model="mlp") == "fake+rapl"
    assert pd.api.types.is_float_dtype(result.tables["energy_gross"][H100])  # numbers stay numbers
    text = (tmp_path / "out" / "summary.md").read_text()
    # Values in engineering notation, the CI in the same unit; each column's source once, in a last row.
    assert "| mlp | fp32 | 400 J ±20 J | 100 J ±5 J | 50 J ±2.5 J |" in text
    source_row = "| energy source |  | estimated_specpower | nvml_counter+rapl | fake+rapl |"
    assert text.count(source_row) == 5  # gross, net, CO2e, water, ESS: each inherits its energy's source
    assert "| mlp | fp32 | 80 mg | 20 mg | 10 mg |" in text  # CO2e in g with its prefix
    assert "| mlp | fp32 | 444 µL | 111 µL | 55.6 µL |" in text  # water in L everywhere
    assert "estimated_specpower" not in text.split(source_row)[0].splitlines()[-1]  # never in every cell
    html = (tmp_path / "out" / "summary.html").read_text()
    assert "400 J ±20 J" in html and "<td>estimated_specpower</td>" in html
    csv = pd.read_csv(tmp_path / "out" / "tables" / "energy_source.csv")
    assert csv.loc[0, "Intel Xeon"] == "estimated_specpower"


def test_a_cell_whose_source_differs_from_its_column_names_it(runs, store, tmp_path):
    for model in ("a", "b", "c"):
        runs.job(model, hardware=H100, metrics=figures(100.0), sources=GPU_SOURCES)
    runs.job("d", hardware=H100, metrics=figures(0.002), sources=CPU_SOURCES)
    aggregate(store, EXPERIMENT, out_dir=tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "| d | fp32 | 2 mJ ±100 µJ (estimated_specpower) |" in text
    assert "| a | fp32 | 100 J ±5 J |" in text
    assert "| energy source |  | nvml_counter+rapl |" in text


def test_repeated_runs_show_their_spread_beside_the_within_run_ci(runs, store, tmp_path):
    for energy in (0.028, 0.056, 0.042):  # one config measured three times on a shared machine
        runs.job(metrics=figures(energy))
    runs.job("mlp", metrics=figures(1.0))  # measured once: no spread to show
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    assert cell(result.tables["energy_gross_runs"], H100, model="logistic_regression") == 3
    cv = cell(result.tables["energy_gross_spread"], H100, model="logistic_regression")
    assert cv == pytest.approx(0.014 / 0.042)  # sample standard deviation over the mean
    text = (tmp_path / "summary.md").read_text()
    assert "| logistic_regression | fp32 | 42 mJ ±2.1 mJ (runs: 3, CV 33%) |" in text
    assert "| mlp | fp32 | 1 J ±50 mJ |" in text


def test_a_run_without_some_figures_keeps_its_row_in_every_table(runs, store, tmp_path):
    runs.job(metrics=figures(120.0), hardware=H100)
    runs.job(metrics=figures(300.0), hardware=T4)
    # An older schema's FINISHED run: throughput and quality, no energy, CO2e, water or ESS.
    kept = ("throughput_per_s", "quality.accuracy", "samples", "window_s")
    older = {k: v for k, v in figures(80.0).items() if k in kept}
    runs.job("mlp", hardware=H100, metrics=older)
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    rows = result.tables["energy_gross"][["model", "precision"]]
    assert list(rows["model"]) == ["logistic_regression", "mlp"]
    for name, table in result.tables.items():
        assert table[["model", "precision"]].equals(rows), name  # the same rows, in the same order
    for name in ("energy_gross", "energy_gross_ci95", "energy_net", "co2e", "water", "ess"):
        assert cell(result.tables[name], H100, model="mlp") == "not logged", name
        assert math.isnan(cell(result.tables[name], T4, model="mlp")), name  # no mlp run on the T4
    assert cell(result.tables["throughput"], H100, model="mlp") == older["throughput_per_s"]
    csv = pd.read_csv(tmp_path / "tables" / "energy_gross.csv")
    assert csv.loc[csv["model"] == "mlp", H100].item() == "not logged"
    text = (tmp_path / "summary.md").read_text()
    # every energy table: gross, net, CO2e, water, ESS; the T4's empty cell says why
    assert text.count("| mlp | fp32 | not logged | no finished run |") == 5
    assert any(note.startswith("not logged: the run has no such figure") for note in result.notes)
    assert any(note.startswith("no finished run: no FINISHED run of that row") for note in result.notes)
    assert (tmp_path / "plots" / "ess.png").exists()


def test_a_run_whose_gpu_was_not_metered_has_rows_of_its_own_marked_in_every_table(runs, store, tmp_path):
    mig = "MIG instance MIG-4f6c: NVML meters the whole GPU, not the instance"
    runs.job(metrics=figures(100.0), extra_tags={"energy_complete": "true"})
    runs.job(metrics=figures(110.0))  # logged before the tag existed: complete, a repeat of the first
    unmetered = {"gpu": "none", "cpu": "rapl", "ram": "estimated_per_gb"}
    tags = {"energy_complete": "false", "energy_unmetered.gpu": mig}
    runs.job(metrics=figures(40.0), sources=unmetered, extra_tags=tags)  # the same config, GPU left out
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    incomplete = f"INCOMPLETE: gpu not metered ({mig})"
    assert result.tables["energy_gross"].columns[2] == "energy"
    for name, table in result.tables.items():
        assert list(table["energy"]) == ["complete", incomplete], name  # marked in every table
    energy, counted = result.tables["energy_gross"], result.tables["energy_gross_runs"]
    assert cell(energy, H100, energy="complete") == 110.0  # the latest complete run
    assert cell(energy, H100, energy=incomplete) == 40.0
    assert (cell(counted, H100, energy="complete"), cell(counted, H100, energy=incomplete)) == (2, 1)
    label = cell(result.tables["energy_source"], H100, energy=incomplete)
    assert label == "gpu NOT METERED+rapl+estimated_per_gb"
    csv = pd.read_csv(tmp_path / "tables" / "co2e.csv")
    assert list(csv["energy"]) == ["complete", incomplete]
    text = (tmp_path / "summary.md").read_text()
    assert f"| logistic_regression | fp32 | {incomplete} | 40 J ±2 J ({label}) |" in text
    assert "| logistic_regression | fp32 | complete | 110 J ±5.5 J (runs: 2, CV 6.7%) |" in text
    assert any(note.startswith("1 FINISHED runs have INCOMPLETE energy") for note in result.notes)
    assert (tmp_path / "plots" / "ess.png").exists()  # the complete row drawn, the other left out


def test_a_whole_gpu_run_under_mig_is_never_a_repeat_of_a_run_on_its_own_gpu(runs, store, tmp_path):
    """Under MIG the counter covers the whole GPU: such a run has a row of its own, says so, and is left
    out of the plots; never the latest of a cell the job's own GPU filled, never in its spread."""
    why = "cuda:0 is MIG instance MIG-dddd of NVML GPU 0, holding 43% of it: NVML's counter covers ..."
    runs.job(metrics=figures(100.0), extra_tags={"energy_complete": "true"})
    whole = {"gpu": "nvml_counter_whole_gpu", "cpu": "rapl", "ram": "estimated_per_gb"}
    tags = {"energy_complete": "true", "energy_whole_gpu.gpu": why, "ecopipe.gpu_mig_share": "0.4286"}
    runs.job(metrics=figures(300.0), sources=whole, extra_tags=tags)  # later, the same config
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    label = "WHOLE GPU (MIG instance holding 43% of it)"
    for name, table in result.tables.items():
        assert list(table["energy"]) == ["complete", label], name
    energy = result.tables["energy_gross"]
    assert (cell(energy, H100, energy="complete"), cell(energy, H100, energy=label)) == (100.0, 300.0)
    assert "energy_gross_runs" not in result.tables  # one run per cell: no spread mixes the two
    assert cell(result.tables["energy_source"], H100, energy=label).startswith("nvml_counter_whole_gpu")


def test_both_readers_keep_the_params_that_tell_finished_job_runs_apart(runs, client):
    runs.job(metrics=figures(1.0))
    tuned = runs.job(
        metrics=figures(2.0), extra_tags={"energy_complete": "false", "energy_unmetered.gpu": "MIG"}
    )
    client.log_param(tuned, "model.params.C", "0.5")  # a key the other run lacks
    failed = runs.job("mlp", status="FAILED", error="RuntimeError: x")  # never tells configs apart
    client.log_param(failed, "dataset.limit", "7")
    experiment = [runs.experiment_id]
    for filter_string, expected in [
        (None, ["params.batch_size", "params.model.params.C"]),  # model.name: the same in both FINISHED
        ("metrics.energy_per_1k_gross_j > 1.5", ["params.batch_size"]),  # one run: nothing to tell apart
    ]:
        sql = read_runs(client, experiment, filter_string=filter_string, reader="sql")
        search = read_runs(client, experiment, filter_string=filter_string, reader="search")
        pd.testing.assert_frame_equal(sql, search, obj=str(filter_string))
        assert [c for c in sql if c.startswith("params.")] == expected, filter_string
        assert {"tags.energy_complete", "tags.energy_unmetered.gpu"} <= set(sql.columns)


def test_latest_finished_run_fills_a_shared_cell(runs, store):
    runs.job(metrics=figures(100.0))
    runs.job(metrics=figures(90.0))  # a repeat, later: it wins
    runs.job(metrics=figures(10.0), status="FAILED", error="RuntimeError: boom")  # later but failed
    result = aggregate(store, EXPERIMENT)
    assert cell(result.tables["energy_gross"], H100, precision="fp32") == 90.0
    assert any("1 earlier runs superseded" in note for note in result.notes)


def test_failed_and_killed_jobs_are_listed(runs, store, tmp_path):
    runs.job(metrics=figures(100.0))
    runs.job("mlp", "fp16", T4, figures(5.0), status="FAILED", error="RuntimeError: CUDA out of memory")
    runs.job("cnn", "int8", H100, status="KILLED", error="killed: process 42 ended")
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    failed = result.failed.set_index("model")
    assert set(failed.index) == {"mlp", "cnn"}
    assert failed.loc["mlp", ["precision", "hardware", "status"]].tolist() == ["fp16", T4, "FAILED"]
    assert failed.loc["mlp", "error"] == "RuntimeError: CUDA out of memory"
    assert failed.loc["mlp", "run_name"] == "mlp-digits-fp16-bs8"
    assert failed.loc["cnn", "status"] == "KILLED"
    assert "mlp" not in set(result.tables["energy_gross"]["model"])  # a failure fills no cell
    assert "RuntimeError: CUDA out of memory" in (tmp_path / "summary.md").read_text()
    assert len(pd.read_csv(tmp_path / "data" / "failed.csv")) == 2


def test_a_failed_job_rerun_later_is_marked_superseded(runs, store):
    runs.job(status="FAILED", error="RuntimeError: flaky")
    runs.job(metrics=figures(100.0))
    (superseded,) = aggregate(store, EXPERIMENT).failed["superseded"]
    assert superseded


def test_files_are_written_as_csv_markdown_html_and_png(runs, store, tmp_path):
    grid(runs)
    out = tmp_path / "tables"
    result = aggregate(store, EXPERIMENT, out_dir=out)
    names = {path.name for path in result.files}
    for name in ("energy_gross.csv", "co2e.csv", "water.csv", "ess.csv", "throughput.csv"):
        assert name in names
    assert {"precision_gain_ess.csv", "energy_source.csv", "failed.csv", "runs.csv"} <= names
    assert {"summary.md", "summary.html", "ess.png", "energy_quality.png"} <= names
    folders = {p.name: p.parent.relative_to(out).as_posix() for p in result.files}
    assert folders["summary.md"] == "." and folders["ess.csv"] == "tables" and folders["ess.png"] == "plots"
    assert folders["runs.csv"] == folders["failed.csv"] == "data"
    assert all(path.stat().st_size > 0 for path in result.files)
    for png in ("ess.png", "energy_quality.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "tables" / "energy_gross.csv")
    assert table.loc[table["precision"] == "fp16", H100].item() == 70.0


def test_a_plot_without_data_is_skipped(runs, store, tmp_path):
    runs.job(metrics=figures(100.0, quality=None))  # random weights: no quality
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path)
    names = {path.name for path in result.files}
    assert "ess.png" in names and "energy_quality.png" not in names
    assert not any(name.startswith("quality") for name in result.tables)


def test_rows_gain_dataset_and_region_only_when_they_vary(runs, store):
    original = runs.job(metrics=figures(100.0))
    result = aggregate(store, EXPERIMENT)
    assert list(result.tables["ess"].columns[:2]) == ["model", "precision"]
    # A re-impact of the same measurement in another region, and a second data set.
    runs.job(
        metrics=figures(100.0) | {"co2e_g_per_1k": 0.001},
        region="FRA",
        extra_tags={"ecopipe.reimpact_of": original},
    )
    runs.job(metrics=figures(80.0), dataset="iris")
    co2e = aggregate(store, EXPERIMENT).tables["co2e"]
    assert list(co2e.columns[:4]) == ["model", "dataset", "precision", "region"]
    assert cell(co2e, H100, dataset="digits", region="FRA") == 0.001
    assert cell(co2e, H100, dataset="digits", region="WORLD") == figures(100.0)["co2e_g_per_1k"]


def test_a_sweep_selects_its_children_and_their_reimpacts(runs, store):
    first, second = runs.sweep(), runs.sweep()
    runs.job(metrics=figures(100.0), sweep=first)
    runs.job("mlp", metrics=figures(200.0), sweep=second)
    # A re-impact drops mlflow.* tags but keeps ecopipe.sweep_id.
    runs.job("mlp", metrics=figures(200.0), region="FRA", extra_tags={"ecopipe.sweep_id": second})
    for reader in ("sql", "search"):
        jobs = aggregate(store, EXPERIMENT, sweep_id=second, reader=reader).jobs
        assert sorted(jobs["region"]) == ["FRA", "WORLD"] and set(jobs["model"]) == {"mlp"}, reader


def test_sql_reader_and_search_runs_return_identical_frames(runs, store, client, monkeypatch):
    monkeypatch.setattr(tracking, "SEARCH_PAGE", 2)  # search_runs reads 7 runs over several pages
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


def test_aggregates_a_real_job(make_cfg, client, store, tmp_path):
    from ecopipe.job import run_job

    outcome = run_job(make_cfg())
    result = aggregate(store, "ecopipe")
    run = client.get_run(outcome.run_id)
    hardware = run.data.tags["ecopipe.hardware"]
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
    shared = ("ecopipe.ess", "ecopipe.strategy", "ecopipe.attribution", "ecopipe.weights")
    assert {k: bench_run.data.tags[k] for k in shared} == {k: run.data.tags[k] for k in shared}


def test_an_ess_that_is_not_defined_says_so_in_every_table_and_plot(make_cfg, client, store, tmp_path):
    from ecopipe.job import run_job

    # A zero-carbon grid: CO2e is 0, so ESS (parameters / CO2e) is not defined, in a real job's tags.
    undefined = run_job(make_cfg("impact.carbon_intensity=0"))
    defined = run_job(make_cfg("model=ridge"))
    hardware = client.get_run(undefined.run_id).data.tags["ecopipe.hardware"]
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


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, module="ecopipe.aggregate")


def test_cli_writes_the_tables_and_says_where(runs, store, tmp_path):
    grid(runs)
    out = tmp_path / "cli-out"
    done = _cli("--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(out.resolve()) in done.stdout
    assert (out / "summary.md").exists() and (out / "tables" / "energy_gross.csv").exists()
    # The headline tables on the terminal, as in summary.md: energy, then CO2e, per 1,000 inferences.
    summary = (out / "summary.md").read_text()
    for title in ("Energy per 1,000 inferences, gross [J]", "CO2e per 1,000 inferences [g]"):
        table = summary.split(f"## {title}\n\n")[1].split("\n\n")[0]
        assert f"{title}\n\n{table}\n" in done.stdout


def test_cli_unknown_experiment_is_one_line_and_exit_2(runs, store, tmp_path, capsys):
    grid(runs)
    done = _cli("--experiment", "nope", "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nope" in done.stderr
    assert "Traceback" not in done.stderr
    # the same in process
    assert main(["--experiment", "nope", "--tracking-uri", store]) == 2
    assert "nope" in capsys.readouterr().err


def test_selection_study_lists_every_arm_of_the_latest_selection_job():
    from ecopipe.aggregation.tables import selection_study

    def arm(name: str, accuracy: float, energy: float, savings: float) -> dict[str, float]:
        metric = f"selection.{name}."
        return {
            metric + "accuracy": accuracy,
            metric + "accuracy_delta_vs_reference": accuracy - 0.96,
            metric + "energy_per_1k_j": energy,
            metric + "energy_per_1k_ci95_j": 0.1,
            metric + "savings_measured_vs_reference": savings,
            metric + "savings_measured_vs_reference_ci95_low": savings - 0.05,
            metric + "savings_measured_vs_reference_ci95_high": savings + 0.05,
            metric + "savings_measured_vs_costliest": savings,
        }

    base = {"model": "pool:digits_hard", "hardware": "T4", "source": "nvml_counter+rapl"}
    old = {**base, "strategy": "router", "start_time": 1, **arm("member_tree", 0.5, 9.0, 0.0)}
    new = {
        **base,
        "strategy": "cascade:balanced",
        "start_time": 2,
        **arm("member_tree", 0.7, 1.0, 0.75),
        **arm("member_forest", 0.96, 4.0, 0.0),
        **arm("cascade_balanced", 0.95, 2.0, 0.5),
        "selection.savings_measured_vs_reference": 0.5,  # the job's own strategy, not an arm row
    }
    single = {**base, "model": "gpt2", "strategy": "single", "start_time": 3, "energy_per_1k_gross_j": 9.0}
    study = selection_study(pd.DataFrame([old, new, single])).set_index("arm")
    assert list(study.index) == ["cascade_balanced", "member_forest", "member_tree"]
    assert study.loc["member_tree", "savings vs reference"] == pytest.approx(0.75)
    assert study.loc["cascade_balanced", "energy per 1,000 (J)"] == 2.0
    assert study.loc["cascade_balanced", "savings vs reference, 95% low"] == pytest.approx(0.45)
    assert study.loc["cascade_balanced", "accuracy vs reference"] == pytest.approx(-0.01)


def test_decode_energy_is_generate_minus_prefill_per_decode_step():
    from ecopipe.aggregation.tables import decode_energy

    cells = pd.DataFrame(
        [
            {
                "model": "opt-125m",
                "precision": "fp16",
                "phase": "generate",
                "hardware": "H100",
                "energy_per_1k_gross_j": 33_000.0,
                "max_new_tokens": 32.0,
            },
            {
                "model": "opt-125m",
                "precision": "fp16",
                "phase": "prefill",
                "hardware": "H100",
                "energy_per_1k_gross_j": 2_000.0,
                "max_new_tokens": 32.0,
            },
            {
                "model": "gpt2",
                "precision": "fp16",
                "phase": "generate",
                "hardware": "H100",
                "energy_per_1k_gross_j": 9_000.0,
                "max_new_tokens": 32.0,
            },  # no prefill run: no decode row
        ]
    )
    table = decode_energy(cells, ["model", "phase", "precision"], ["H100"])
    assert list(table["model"]) == ["opt-125m"]
    # (33 J - 2 J) per prompt over 31 decode steps = 1 J per decoded token
    assert table["H100"].iloc[0] == pytest.approx(1.0)
    assert decode_energy(cells, ["model", "precision"], ["H100"]).empty  # one phase only: no table


def test_cli_without_arguments_takes_the_latest_sweep_and_says_which(runs, store, tmp_path):
    older = runs.sweep()
    runs.job("mlp", metrics=figures(50.0), sweep=older)
    newer = runs.sweep()
    grid(runs, newer)
    done = _cli("--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        f"aggregating the latest sweep {newer}" in done.stdout and f"experiment {EXPERIMENT}" in done.stdout
    )
    assert "--sweep PARENT_RUN_ID picks another" in done.stdout
    runs_read = pd.read_csv(tmp_path / "aggregate" / f"{EXPERIMENT}-{newer[:8]}" / "data" / "runs.csv")
    assert set(runs_read["model"]) == {"logistic_regression"}  # the older sweep's mlp is not in it


# ---------------------------------------------------------------------------------------------------
# Several stores: a GPU machine's and a CPU machine's, one table

TWO = "two-machines"
OTHER_CPU = "Intel Xeon Platinum 8380"  # a CPU of ecopipe/data/hardware.csv: another machine's name


@dataclass
class Machines:
    gpu: str  # store URIs, as each machine returns its own
    cpu: str
    gpu_run: Run
    cpu_run: Run


def _job_into(uri: str, *overrides: str) -> Run:
    """A real job of experiment TWO logged into `uri`, with the idle baseline its own machine's."""
    from ecopipe.job import run_job
    from ecopipe.stages import inference

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"tracking.uri={uri}", f"tracking.experiment={TWO}", *FAST, *overrides]
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "_IDLE_CACHE", {})
        run_id = run_job(cfg).run_id
    return MlflowClient(uri).get_run(run_id)


@pytest.fixture(scope="module")
def machines(tmp_path_factory) -> Machines:
    """Two stores written by real jobs: one with a simulated GPU on this machine (energy source fake+...),
    one on another machine's CPU (`hardware.cpu_model`), so their `ecopipe.hardware` tags differ."""
    folder = tmp_path_factory.mktemp("machines")
    gpu, cpu = (f"sqlite:///{folder / name / 'mlflow.db'}" for name in ("gpu", "cpu"))
    gpu_run = _job_into(gpu, "monitor.fake_gpu_watts=50")
    cpu_run = _job_into(cpu, f"hardware.cpu_model={OTHER_CPU}")
    hardware = {run.data.tags["ecopipe.hardware"] for run in (gpu_run, cpu_run)}
    assert len(hardware) == 2 and OTHER_CPU in hardware  # else both runs would share one column
    return Machines(gpu, cpu, gpu_run, cpu_run)


def test_two_stores_make_one_table_with_each_machines_column_and_source(machines, tmp_path):
    out = tmp_path / "both"
    args = ["--tracking-uri", machines.gpu, "--tracking-uri", machines.cpu, "--experiment", TWO]
    done = _cli(*args, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = {"gpu": machines.gpu_run, "cpu": machines.cpu_run}
    column = {name: run.data.tags["ecopipe.hardware"] for name, run in runs.items()}
    energy = pd.read_csv(out / "tables" / "energy_gross.csv")
    assert list(energy.columns) == ["model", "precision", *sorted(column.values())]
    assert len(energy) == 1  # the same model and precision on both machines: one row
    for name, run in runs.items():
        assert energy[column[name]].item() == pytest.approx(run.data.metrics["energy_per_1k_gross_j"])
    # Each column names its own machine's energy source, in the source table and the summary's last row.
    sources = pd.read_csv(out / "tables" / "energy_source.csv")
    label = {name: sources[column[name]].item() for name in runs}
    assert label["gpu"].startswith("fake+") and "fake" not in label["cpu"]
    for name, run in runs.items():
        assert run.data.tags["energy_source.cpu"] in label[name]
    ordered = [label[name] for name in sorted(runs, key=column.get)]
    summary = (out / "summary.md").read_text()
    assert f"| energy source |  | {' | '.join(ordered)} |" in summary
    # The stores by as much of their path as tells them apart: no machine's absolute path.
    gpu, cpu = "sqlite:///…/gpu/mlflow.db (a local file)", "sqlite:///…/cpu/mlflow.db (a local file)"
    assert f"tracking stores (2, column store in runs.csv): {gpu} (job runs: 1); {cpu}" in summary
    jobs = pd.read_csv(out / "data" / "runs.csv")
    assert dict(zip(jobs["run_id"], jobs["store"], strict=True)) == {
        machines.gpu_run.info.run_id: gpu,
        machines.cpu_run.info.run_id: cpu,
    }


def test_a_run_in_two_stores_is_counted_once_and_noted(machines, tmp_path):
    copy = tmp_path / "copied.db"  # the GPU machine's database, copied under another name
    shutil.copyfile(sqlite_path(machines.gpu), copy)
    result = aggregate([machines.cpu, f"sqlite:///{copy}", machines.gpu], TWO)
    gpu_run = machines.gpu_run.info.run_id
    assert sorted(result.jobs["run_id"]) == sorted([gpu_run, machines.cpu_run.info.run_id])
    first_given = f"sqlite:///…/{copy.parent.name}/copied.db (a local file)"  # as many parts as tell apart
    assert result.jobs.set_index("run_id").loc[gpu_run, "store"] == first_given
    assert "1 runs found in more than one store (a copied database file?)" in result.notes[1]
    assert gpu_run in result.notes[1]
    assert not any(
        "more than one store" in note for note in aggregate([machines.cpu, machines.gpu], TWO).notes
    )


def _stores(*uris: str) -> list[str]:
    return [arg for uri in uris for arg in ("--tracking-uri", uri)]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ([], "several stores need --experiment NAME"),
        (["--experiment", TWO, "--sweep", "0123abcd"], "--sweep works with one --tracking-uri only"),
        (["--experiment", TWO, "--log"], "--log works with one --tracking-uri only"),
        (
            ["--experiment", TWO, "--store-uri", "postgresql://u@h/db"],
            "--store-uri works with one --tracking-uri",
        ),
    ],
)
def test_several_stores_refuse_single_store_options_before_any_work(machines, tmp_path, capsys, extra, named):
    out = tmp_path / "never"
    assert main([*_stores(machines.gpu, machines.cpu), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ecopipe.aggregate: error: ") and named in err and err.count("\n") == 1
    assert not out.exists()


def test_the_same_store_given_twice_is_refused(machines, capsys, monkeypatch):
    path = sqlite_path(machines.cpu)
    monkeypatch.chdir(path.parent)
    for second in (machines.cpu, "sqlite:///mlflow.db"):  # the same string, and the same file relative
        assert main([*_stores(machines.cpu, second), "--experiment", TWO]) == 2
        err = capsys.readouterr().err
        assert f"--tracking-uri {second} is given twice" in err and "give each store once" in err
    assert not (path.parent / "aggregate").exists()


def test_a_missing_store_or_experiment_is_refused_naming_that_store(machines, tmp_path, capsys):
    absent = tmp_path / "absent.db"
    assert main([*_stores(machines.gpu, f"sqlite:///{absent}"), "--experiment", TWO]) == 2
    assert f"ecopipe.aggregate: error: no tracking store at {absent}" in capsys.readouterr().err
    assert not absent.exists()  # reading never creates a store
    other = f"sqlite:///{tmp_path / 'other.db'}"  # a real store holding another experiment only
    ensure_experiment(MlflowClient(other), other, "something-else")
    capsys.readouterr()  # MLflow's lines creating that store
    assert main([*_stores(machines.gpu, other), "--experiment", TWO, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"ecopipe.aggregate: error: no experiment named '{TWO}' in {other}\n"
