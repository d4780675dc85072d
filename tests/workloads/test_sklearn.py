"""Every scikit-learn model option fits and predicts on its data set without a FutureWarning: a
deprecated parameter in conf/model (SVC's probability=true in scikit-learn 1.9) fails here first."""

from __future__ import annotations

import warnings

import pytest
from omegaconf import OmegaConf

from ecopipe.config import CONFIG_DIR
from ecopipe.workloads.factory import build_workload

SKLEARN_OPTIONS = sorted(
    path.stem
    for path in (CONFIG_DIR / "model").glob("*.yaml")
    if OmegaConf.load(path).get("framework") == "sklearn"
)


def test_the_sklearn_options_are_found():
    assert {"logistic_regression", "svc", "svc_rbf", "ridge", "random_forest"} <= set(SKLEARN_OPTIONS)


@pytest.mark.parametrize("option", SKLEARN_OPTIONS)
def test_a_sklearn_option_fits_and_predicts_without_future_warnings(make_cfg, option):
    workload = build_workload(OmegaConf.to_object(make_cfg(f"model={option}")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        workload.load()
        assert workload.fit()
        batch = workload.batches()[0]
        assert len(workload.predict(batch)) == len(batch)
