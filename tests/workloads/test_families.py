"""Workload families: the package's chosen by framework and task, one of the user's by its class path in
`model._target_` (no file of the package names it), and a model no family runs refused before
anything loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sklearn.neighbors import NearestCentroid

from ecopipe.config import TASK_DATA, ConfigError, Task
from ecopipe.workloads.factory import build_workload
from ecopipe.workloads.tabular import load_tabular
from tests.conftest import FAST, run_cli

HERE = Path(__file__).resolve().parent
CENTROID = "tests.workloads.centroid.NearestCentroid"


def test_a_family_from_the_test_folder_runs_through_a_real_job(make_cfg, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli(
        f"hydra.searchpath=[file://{HERE / 'conf'}]", "model=centroid", "dataset=iris",
        f"tracking.uri={store}", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["ecopipe.model"] == "centroid"
    assert run.data.params["model._target_"] == CENTROID
    # Measured as any family is: its fit metered apart, energy per inference, and its own quality, which
    # scikit-learn's nearest-centroid classifier on the same split reproduces.
    metrics = run.data.metrics
    assert metrics["fit_s"] > 0 and metrics["energy_per_1k_gross_j"] > 0
    data = load_tabular(OmegaConf.to_object(make_cfg("dataset=iris")).dataset)
    expected = NearestCentroid().fit(data.x_train, data.y_train).predict(data.x_test)
    assert metrics["quality.accuracy"] == pytest.approx(np.mean(expected == data.y_test))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model=small_cnn"], "model.framework=torch with model.task=tabular_classification has no workload"),
        (["model._target_=tests.workloads.nope.Nope"], "model._target_=tests.workloads.nope.Nope cannot be"),
        (["model._target_=tests.workloads.centroid.TabularSplit"], "is not a workload family"),
        (["model=svc", "engine=compiled"], "engine=compiled applies to text generation, not to model=svc"),
        (["model=svc", "hardware.device=cuda"], "it runs on the CPU only"),
    ],
)
def test_a_model_no_family_runs_is_refused_before_anything_loads(make_cfg, overrides, needle):
    # plan_job builds the workload before the run opens: a refusal here leaves no run behind.
    with pytest.raises(ConfigError, match=needle):
        build_workload(OmegaConf.to_object(make_cfg(*overrides)))


def test_every_task_names_the_data_it_reads():
    # A new task is a Task member and its TASK_DATA line; without the line, validate would fail on a KeyError.
    assert set(TASK_DATA) == set(Task)
