"""A selection job end to end: real sensors, unwrapped members, the run in MLflow."""

from __future__ import annotations

import re

import pytest

from ecopipe.job import run_job
from ecopipe.names import TagFamily
from tests.conftest import FAST
from tests.selection.conftest import COSTS, HARD


def test_study_job_end_to_end(make_cfg, client):
    outcome = run_job(make_cfg("strategy=router", *HARD[len(FAST) :], "pool.max_samples=1500"))
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["quality.accuracy"] > 0.3
    shares = [v for k, v in metrics.items() if k.startswith("quality.share.")]
    assert len(shares) == 6 and sum(shares) == pytest.approx(1.0)
    # Effective parameters by hand from what the router ran: itself on every input, then only the
    # member it picked (its share of the inputs), each at the parameter count the job logged for it.
    tags = run.data.tags
    members = {m: int(tags[f"ecopipe.workload.parameters.{m}"]) for m in COSTS}
    # Two of them counted by hand (digits_hard: 64 features, 10 classes): logistic regression's weights
    # and intercepts; mlp_small's two layers (one hidden layer of 128) with their biases.
    assert members["logistic_regression"] == 64 * 10 + 10
    assert members["mlp_small"] == (64 * 128 + 128) + (128 * 10 + 10)
    router = int(tags["ecopipe.workload.parameters.router"])
    assert metrics["parameters"] == sum(members.values()) + router
    picked = {m: metrics[f"quality.share.{m}"] for m in members}
    for m in members:  # one member per input: what it ran on is what it answered
        assert metrics[f"quality.evaluated.{m}"] == pytest.approx(picked[m], abs=1e-12), m
    effective = router + sum(members[m] * picked[m] for m in members)
    assert metrics["effective_parameters"] == pytest.approx(effective, rel=1e-9)
    assert metrics["effective_parameters"] < metrics["parameters"]
    # ESS = effective parameters (M) / gCO2e per 1,000 inferences (ess_run: per run), from the logged CO2e.
    assert metrics["ess"] == pytest.approx(effective / 1e6 / metrics["co2e_g_per_1k"], rel=1e-9)
    assert metrics["ess_run"] == pytest.approx(effective / 1e6 / metrics["co2e_g_run"], rel=1e-9)
    for key in (
        "savings_measured_vs_reference",
        "savings_measured_vs_costliest",
        "accuracy_delta_vs_reference",
    ):
        assert f"selection.{key}" in metrics and f"selection.{key}_ci95_high" in metrics
    assert "savings_vs_heaviest" not in " ".join(metrics)
    # Every arm's energy carries its band, here an estimate's: wider than its CI alone.
    for arm in ("router_balanced", "member_svc_rbf"):
        low, point, high = (metrics[f"selection.{arm}.energy_per_1k_j{end}"] for end in ("_low", "", "_high"))
        assert 0 <= low < point < high, arm
    assert run.data.tags[TagFamily.WORKLOAD.of("reference")] in run.data.params["pool.members"]
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id, "selection")}
    assert artifacts == {"selection/pareto.csv", "selection/pareto.png", "selection/selection.json"}
    # This machine estimates energy: the summary says the savings are then time savings, names the
    # reference's energy an ESTIMATE, and calls nothing measured (the pareto plot's axis is built from
    # the same label: test_pareto_axis_names_what_the_markers_are).
    assert "savings vs reference" in outcome.summary and "time savings" in outcome.summary
    assert ", ESTIMATE, gross)" in outcome.summary
    assert not re.search(r"\bmeasured\b", outcome.summary, re.IGNORECASE), outcome.summary
