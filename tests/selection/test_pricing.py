"""The reference member, a test split read once, and members priced per call and per row."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from ecopipe.monitor.energy import EnergyMeter
from ecopipe.selection import study
from ecopipe.selection.costs import (
    Accounting,
    MemberCost,
    Prices,
    batch_sizes,
    batched,
    fit_affine,
    measure_member_cost,
)
from ecopipe.selection.data import load_pool_data
from ecopipe.selection.workload import build_selection_workload
from tests.selection.conftest import COSTS, ORDER, Ledger, compose_cfg


def test_reference_is_the_most_accurate_member_on_validation_b_ties_to_the_cheaper(study_run):
    assert study.pick([0.9, 0.95, 0.95, 0.8], [1.0, 3.0, 2.0, 0.5]) == 2
    workload, _, findings = study_run
    accuracy_b = workload.validation_b.correct.mean(axis=1)
    assert workload.reference == int(np.argmax(accuracy_b))  # members are in price order: first = cheaper
    # The priciest member is less accurate here: "reference = the costliest" would pick the wrong one.
    assert workload.reference != len(workload.members) - 1
    assert workload.members[-1].name == "random_forest"
    # The pool spreads over at least 10 accuracy points on validation B, even on this small sample.
    assert accuracy_b.max() - accuracy_b.min() >= 0.10
    reference = workload.members[workload.reference].name
    assert findings.metrics["selection.reference_accuracy"] == pytest.approx(
        workload.evaluation.correct[workload.reference].mean()
    )
    assert any(reference in line and "reference" in line for line in findings.summary)


def test_test_split_is_read_once_and_fitting_never_sees_it(ledger, study_run, monkeypatch):
    """The study read test once; replacing every test row and label leaves all that fit() learns alone.

    The workload loads the real data, tampered in its test rows only: the one way to show that nothing
    fit() learns depends on them.
    """
    reference, _, _ = study_run
    assert reference.data.reads["test"] == 1
    workload = build_selection_workload(compose_cfg("strategy=cascade"))
    workload.attach_meter(EnergyMeter([ledger]))
    data = load_pool_data(workload.pool, workload.seed)
    test = data.splits.test
    x, y = data.x.copy(), data.y.copy()
    x[test] = np.random.default_rng(7).random((len(test), x.shape[1]), dtype=np.float32)
    y[test] = (y[test] + 1) % data.classes
    tampered = type(data)(x, y, data.image_shape, data.splits)
    import ecopipe.selection.workload as module

    monkeypatch.setattr(module, "load_pool_data", lambda pool, seed: tampered)
    workload.load()
    with ledger.charging():
        workload.fit()
    assert [m.name for m in workload.members] == [m.name for m in reference.members]
    assert [m.temperature for m in workload.members] == [m.temperature for m in reference.members]
    assert workload.reference == reference.reference
    for name, plan in reference.plans.items():
        if plan.tuned is not None:
            assert np.array_equal(workload.plans[name].tuned.thresholds, plan.tuned.thresholds), name
    router, reference_router = (
        workload.strategies["router"].predictors,
        reference.strategies["router"].predictors,
    )
    assert np.array_equal(router.weights, reference_router.weights)
    assert tampered.reads["test"] == 1 and "evaluation" not in workload.__dict__


def test_members_are_priced_per_call_and_per_row_and_ordered_by_price(study_run):
    workload, _, _ = study_run
    assert [m.name for m in workload.members] == ORDER
    for member in workload.members:
        cost = workload.costs[member.name]
        assert (cost.joules_per_call, cost.joules_per_row) == pytest.approx(COSTS[member.name], rel=1e-6)


def test_robust_cost_fit_on_recorded_timings():
    sizes = np.array([1, 4, 16, 64])
    truth = (5e-3, 2e-4)
    # Recorded medians with +-5% noise: the fit comes back within the noise.
    noise = np.array([1.03, 0.96, 1.05, 0.97])
    per_call, per_row = fit_affine(sizes, (truth[0] + truth[1] * sizes) * noise)
    assert per_call == pytest.approx(truth[0], rel=0.1) and per_row == pytest.approx(truth[1], rel=0.1)
    # Timings that a two-point difference would turn into a negative per-row cost (the small batch
    # looked dearer per call than the large one): the fit stays non-negative and near the data.
    per_call, per_row = fit_affine(np.array([8, 64]), np.array([0.40, 0.35]))
    assert per_call >= 0 and per_row >= 0
    assert per_call + 64 * per_row == pytest.approx(0.35, rel=0.15)
    # Small-batch calls cheaper than big ones *per row* only through overhead: per-row must be positive.
    per_call, per_row = fit_affine(sizes, np.array([1.0, 1.0, 1.0, 1.0]) * 1e-3)
    assert per_call == pytest.approx(1e-3, rel=1e-6) and per_row == pytest.approx(0.0, abs=1e-12)
    # Relative error: a 1-row call's reading weighs as much as a 1,000-row call's. The weighted normal
    # equations by hand (both costs come out positive, so the non-negative fit is the plain one):
    sizes, observed = np.array([1.0, 10.0, 1000.0]), np.array([0.02, 0.01, 1.3])
    design = np.stack([np.ones(3), sizes], axis=1) / observed[:, None]
    expected = np.linalg.solve(design.T @ design, design.T @ np.ones(3))
    assert fit_affine(sizes, observed) == pytest.approx(tuple(expected), rel=1e-9)
    absolute = np.linalg.lstsq(np.stack([np.ones(3), sizes], axis=1), observed, rcond=None)[0]
    assert abs(expected[0] - absolute[0]) > 0.3 * expected[0]  # the data tell the two fits apart
    # A window in which a coarse counter never ticked reads 0 J: it carries no weight, so the fit on
    # the other windows is exact (were it weighed, 1/0 would poison the fit).
    sizes = np.array([1.0, 4.0, 16.0, 64.0])
    readings = np.r_[0.0, (truth[0] + truth[1] * sizes)[1:]]
    assert fit_affine(sizes, readings) == pytest.approx(truth, rel=1e-9)
    # One batch size cannot separate the two: all of it is charged per row.
    assert fit_affine(np.array([64, 64]), np.array([0.64, 0.64])) == pytest.approx((0.0, 0.01))
    # Measured through a meter on an exactly affine cost, the fit is exact.
    book = Ledger()
    cost = measure_member_cost(
        "m", EnergyMeter([book]), lambda b: book.charge("svc_rbf", len(b)), np.zeros((300, 2)), 64, 0.0
    )
    assert (cost.joules_per_call, cost.joules_per_row) == pytest.approx(COSTS["svc_rbf"], rel=1e-9)
    assert cost.name == "m" and [n for n, _ in cost.observations] == [1, 4, 16, 64]
    # Each window repeats calls until it lasts its share of the time: 12 windows of 20 ms here, of
    # 1-ms calls, so (even at 6 ms a call on a loaded machine) 3 calls each beside 4 warm-up calls.
    book = Ledger()

    def slow(batch: np.ndarray) -> None:
        book.charge("svc_rbf", len(batch))
        time.sleep(0.001)

    cost = measure_member_cost("m", EnergyMeter([book]), slow, np.zeros((300, 2)), 64, 0.24)
    assert len(book.calls["svc_rbf"]) >= 4 + 12 * 3
    assert (cost.joules_per_call, cost.joules_per_row) == pytest.approx(COSTS["svc_rbf"], rel=1e-9)


def test_prices_charge_the_calls_and_rows_a_strategy_pays():
    a, b, router = MemberCost("a", 1.0, 0.1), MemberCost("b", 10.0, 0.5), MemberCost("router", 2.0, 0.01)
    assert a.per_sample(4) == pytest.approx(1.0 / 4 + 0.1) and a.charge(3, 10) == pytest.approx(3 + 1.0)
    prices = Prices.of([a, b], 4, router)
    assert prices.per_call.tolist() == [1.0, 10.0] and prices.per_row.tolist() == [0.1, 0.5]
    assert prices.per_sample.tolist() == pytest.approx([0.35, 3.0])
    # 10 inputs: a on all (3 calls of <= 4 rows), b on 3 (1 call), the router on all (3 calls).
    by_hand = (3 * 1.0 + 10 * 0.1) + (1 * 10.0 + 3 * 0.5) + (3 * 2.0 + 10 * 0.01)
    assert prices.pass_j(np.array([10, 3]), 10) == pytest.approx(by_hand / 10, rel=1e-12)
    assert Prices.of([a, b], 4).pass_j(np.array([10, 3]), 10) == pytest.approx((by_hand - 6.1) / 10)
    accounting = Accounting(
        10, {"a": 10, "b": 3, "router": 10}, {"a": 3, "b": 1, "router": 3}, {"a": a, "b": b, "router": router}
    )
    assert accounting.charged_j == pytest.approx({"a": 4.0, "b": 11.5, "router": 6.1})
    assert accounting.per_1k_j == pytest.approx(1000 * by_hand / 10, rel=1e-12)
    assert math.isnan(Accounting(0, {}, {}, {}).per_sample_j)
    assert [len(part) for part in batched(np.arange(10), 4)] == [4, 3, 3]
    assert [len(part) for part in batched(np.arange(3), 4)] == [3]
    assert batch_sizes(64) == [1, 4, 16, 64] and batch_sizes(10) == [1, 2, 10] and batch_sizes(1) == [1]
