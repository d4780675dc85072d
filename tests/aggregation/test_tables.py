"""The comparison tables: one column per hardware, sources beside every figure, repeats kept apart."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ecopipe.aggregate import aggregate
from ecopipe.aggregation.load import read_runs
from ecopipe.aggregation.specs import DIFFERENCES_TABLE
from ecopipe.names import Tag, TagFamily
from tests.aggregation.conftest import (
    CPU_SOURCES,
    EXPERIMENT,
    GPU_SOURCES,
    H100,
    T4,
    cell,
    figures,
    grid,
)


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
        if name == DIFFERENCES_TABLE:  # a row per pair of cells, not per row key
            continue
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
    tags = {"energy_complete": "false", TagFamily.ENERGY_UNMETERED.of("gpu"): mig}
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
    tags = {"energy_complete": "true", TagFamily.ENERGY_WHOLE_GPU.of("gpu"): why, Tag.MIG_SHARE: "0.4286"}
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
        metrics=figures(2.0),
        extra_tags={Tag.ENERGY_COMPLETE: "false", TagFamily.ENERGY_UNMETERED.of("gpu"): "MIG"},
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
