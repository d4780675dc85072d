"""Several stores (one per machine) aggregated as one."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ecopipe.aggregate import aggregate, main
from ecopipe.config import CONFIG_DIR
from ecopipe.names import Tag, TagFamily
from ecopipe.tracking.experiment import ensure_experiment
from ecopipe.tracking.store import sqlite_path
from tests.aggregation.conftest import aggregate_cli
from tests.conftest import FAST

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
    hardware = {run.data.tags[Tag.HARDWARE] for run in (gpu_run, cpu_run)}
    assert len(hardware) == 2 and OTHER_CPU in hardware  # else both runs would share one column
    return Machines(gpu, cpu, gpu_run, cpu_run)


def test_two_stores_make_one_table_with_each_machines_column_and_source(machines, tmp_path):
    out = tmp_path / "both"
    args = ["--tracking-uri", machines.gpu, "--tracking-uri", machines.cpu, "--experiment", TWO]
    done = aggregate_cli(*args, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = {"gpu": machines.gpu_run, "cpu": machines.cpu_run}
    column = {name: run.data.tags[Tag.HARDWARE] for name, run in runs.items()}
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
        assert run.data.tags[TagFamily.ENERGY_SOURCE.of("cpu")] in label[name]
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
