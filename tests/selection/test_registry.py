"""Strategies are a registry: one found by name, one of the user's by its class path, a wrong one refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecopipe.names import Tag
from ecopipe.selection.strategies import registered
from tests.conftest import FAST, run_cli

HERE = Path(__file__).resolve().parent
POOL = ["pool=digits_5", "pool.max_samples=600", "pool.cost_window_s=0.02", *FAST]


def test_the_package_strategies_are_registered_in_report_order():
    assert [kind.name for kind in registered()][:3] == ["cascade", "router", "oracle"]


def test_a_strategy_from_the_test_folder_runs_through_a_real_job(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli(
        f"hydra.searchpath=[file://{HERE / 'conf'}]", "strategy=cheapest", f"tracking.uri={store}", *POOL,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    metrics, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags[Tag.STRATEGY] == "cheapest"
    shares = {
        k.removeprefix("quality.share."): v for k, v in metrics.items() if k.startswith("quality.share.")
    }
    (cheapest,) = [member for member, share in shares.items() if share == 1.0]  # one member answered all
    prices = {m: metrics[f"selection.member_{m}.energy_per_1k_accounted_j"] for m in shares}
    assert prices[cheapest] == min(prices.values())
    # Measured in the same trials as every member alone and the package's own strategies.
    assert metrics["quality.accuracy"] == metrics[f"selection.member_{cheapest}.accuracy"]
    assert "selection.cascade_balanced.accuracy" in metrics and "selection.oracle.accuracy" in metrics


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (
            ["strategy=cascade", "strategy.name=cascde"],
            "strategy.name=cascde is unknown; allowed: single, cascade",
        ),
        (["strategy=cascade", "+strategy._target_=tests.selection.nope.Nope"], "cannot be imported"),
        (
            ["strategy=cascade", "+strategy._target_=tests.selection.cheapest.MemberAlone"],
            "is not a strategy",
        ),
        (
            ["strategy=cascade", "+strategy._target_=tests.selection.cheapest.Cheapest"],
            "set strategy.name=cheapest",
        ),
    ],
)
def test_a_wrong_strategy_is_refused_in_one_line_before_loading(tmp_path, overrides, needle):
    done = run_cli(*overrides, "pool=digits_5", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert done.returncode != 0
    assert needle in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "pool member" not in done.stderr  # nothing was fitted
