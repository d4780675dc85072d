"""Cascades, routers and the oracle: queued runners, tuned thresholds, parity with confidence."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from ecopipe.config import Attribution, CascadeTarget, StrategyConfig
from ecopipe.selection.costs import (
    Prices,
)
from ecopipe.selection.oracle import cheapest_right, oracle_energy_at, oracle_frontier
from ecopipe.selection.report import cross_check
from ecopipe.selection.runners import SelectionBatch, concatenate
from ecopipe.selection.strategies.cascade import CascadeRunner
from ecopipe.selection.thresholds import Point, evaluate, normalise, parity_bound, stop_index, tune
from tests.selection.conftest import COSTS


def test_batched_cascade_queues_escalated_rows_and_its_accounting_matches_the_window(ledger, study_run):
    workload, inference, findings = study_run
    runner = workload.runner_for(workload.headline)
    ledger.calls.clear()
    with ledger.charging():
        workload.run_pass()  # one pass over the test split, as in every measured window
    names = [m.name for m in workload.members]
    active = [names[m] for m in runner.active]
    assert len(active) >= 2, "the tuned cascade should escalate through several members"
    batch = workload.batch_size
    for position, name in enumerate(active):
        calls = ledger.calls[name]
        assert calls == [] or sum(calls) == runner.evaluated[names.index(name)]
        if position:  # a deeper member: full batches, then one partial flush at the end of the pass
            assert all(rows == batch for rows in calls[:-1]) and 0 < calls[-1] <= batch
            assert len(calls) == math.ceil(sum(calls) / batch)
    assert set(ledger.calls) == set(active) - {n for n in active if not ledger.calls[n]}
    # What the ledger charged is what the accounting says, and what the window measured.
    test_rows = len(workload.truth)
    charged = sum(COSTS[n][0] * len(c) + COSTS[n][1] * sum(c) for n, c in ledger.calls.items())
    assert runner.accounting(workload.costs).per_1k_j == pytest.approx(1000 * charged / test_rows, rel=1e-9)
    assert inference.per_1k_samples(Attribution.gross).mean == pytest.approx(
        1000 * charged / test_rows, rel=1e-9
    )
    assert findings.metrics["selection.accounting_within_tolerance"] == 1.0
    # The tuning priced the same pass the same way (validation B rows, the same rule).
    assert findings.metrics["selection.accounting_gap_rel"] == pytest.approx(0.0, abs=1e-9)


def test_accounting_check_can_fail(study_run):
    workload, inference, _ = study_run
    name = workload.headline
    honest = cross_check(workload, name, inference.per_1k_samples(Attribution.gross).mean)
    assert honest["accounting_within_tolerance"] == 1.0
    doubled = cross_check(workload, name, inference.per_1k_samples(Attribution.gross).mean / 2)
    assert doubled["accounting_within_tolerance"] == 0.0 and doubled["accounting_gap_rel"] == pytest.approx(
        1.0
    )


def test_cascade_runner_answers_every_row_once_in_any_batch_order():
    """The runner's queueing, row by row. Its members are scripted stand-ins, an exception to the rule on
    fakes: which rows escalate must be known in advance, and nothing here is measured. The study's tests
    run the same runner on the real members."""
    seen: list[tuple[int, int]] = []

    class Fake:
        def __init__(self, position: int, conf: float) -> None:
            self.name, self.position, self.conf = f"m{position}", position, conf

        def proba(self, x: np.ndarray) -> np.ndarray:
            seen.append((self.position, len(x)))
            p = np.full((len(x), 2), 1 - self.conf)
            p[:, 0] = self.conf
            certain = x[:, 0] > 0.5
            p[certain] = [1.0, 0.0]
            return p

    x = np.array([[1.0], [0.0]] * 10)
    runner = CascadeRunner([Fake(0, 0.6), Fake(1, 0.7), Fake(2, 0.8)], 4, np.array([0.9, np.inf, 0.0]))
    batches = [SelectionBatch(x[i : i + 4], np.arange(i, i + 4)) for i in range(0, 20, 4)]
    answers = concatenate([runner.feed(b, last=b is batches[-1]) for b in batches])
    assert answers.rows.tolist() == list(range(20))
    assert answers.chosen.tolist() == [0, 2] * 10  # certain rows stop at once; the rest reach the last
    assert [n for m, n in seen if m == 1] == []  # skipped
    assert [n for m, n in seen if m == 2] == [4, 4, 2]  # queued: full batches, then the flush
    assert runner.evaluated.tolist() == [20, 0, 10] and runner.calls.tolist() == [5, 0, 3]


def test_presets_give_distinct_operating_points(study_run):
    workload, _, _ = study_run
    cascades = [workload.plans[f"cascade_{p}"].tuned for p in StrategyConfig.PRESETS]
    for a, b in pairwise(cascades):
        assert not np.array_equal(a.thresholds, b.thresholds)
    energy = [t.point.energy_j_per_sample for t in cascades]
    assert energy == sorted(energy)  # looser tolerance: cheaper
    # Each within its own tolerance of the reference on validation B. Point accuracies need not follow
    # the tolerances' order: tuning bounds the paired difference, and a cheaper rule that disagrees with
    # the reference on more rows can score a little higher on them.
    reference_accuracy = workload.validation_b.correct[workload.reference].mean()
    for tuned, tolerance in zip(cascades, StrategyConfig.PRESETS.values(), strict=True):
        assert tuned.feasible and tuned.point.accuracy >= reference_accuracy - tolerance - 1e-12


@pytest.mark.parametrize("preset", list(StrategyConfig.PRESETS))
def test_router_meets_its_tolerance_on_validation_b(study_run, preset):
    workload, _, _ = study_run
    tuned = workload.plans[f"router_{preset}"].tuned
    reference_accuracy = workload.validation_b.correct[workload.reference].mean()
    assert tuned.feasible
    assert tuned.point.accuracy >= reference_accuracy - StrategyConfig.PRESETS[preset] - 1e-12
    # It routes, it does not just send everything to the reference: some inputs go to cheaper members.
    assert tuned.point.stopped[: workload.reference].sum() > 0
    # Priced as paid: the router on every input, then only the member it picked.
    prices = workload.strategies["router"].prices()
    assert tuned.point.energy_j_per_sample == pytest.approx(
        prices.pass_j(tuned.point.stopped, tuned.point.stopped.sum())
    )


def test_oracle_is_never_worse_in_energy_than_any_choice_at_equal_accuracy(study_run):
    workload, _, _ = study_run
    view, prices = workload.evaluation, workload.prices()
    costs = prices.per_sample
    frontier = oracle_frontier(view.correct, costs)
    rng = np.random.default_rng(0)
    rows = view.correct.shape[1]
    points: list[Point] = []
    for _ in range(200):  # any per-input choice of one member, priced per input at full batches
        choice = rng.integers(0, len(costs), size=rows)
        accuracy = float(view.correct[choice, np.arange(rows)].mean())
        points.append(Point(accuracy, float(costs[choice].mean()), np.bincount(choice), np.bincount(choice)))
    for m in range(len(costs)):
        points.append(Point(float(view.correct[m].mean()), float(costs[m]), np.zeros(1), np.zeros(1)))
    for point in points:
        assert oracle_energy_at(point.accuracy, frontier) <= point.energy_j_per_sample * (1 + 1e-12)
    assert cheapest_right(np.array([[1, 0], [0, 0]], dtype=bool), np.array([2.0, 1.0])).tolist() == [0, 1]


def test_energy_budget_target_trades_accuracy_for_budget():
    rng = np.random.default_rng(3)
    conf = rng.random((4, 400))
    correct = rng.random((4, 400)) < np.linspace(0.5, 0.95, 4)[:, None] * (0.5 + conf / 2)
    prices = Prices(np.zeros(4), np.array([1.0, 2.0, 5.0, 10.0]), 64)
    for budget in (1.5, 3.0, 6.0):
        tuned = tune(conf, correct, prices, CascadeTarget.energy_budget, 0.0, budget, 11)
        assert tuned.feasible and tuned.point.energy_j_per_sample <= budget
        cheaper = tune(conf, correct, prices, CascadeTarget.energy_budget, 0.0, budget / 2, 11)
        assert cheaper.point.accuracy <= tuned.point.accuracy
    # A terminal member other than the last: a cascade may stop at member 1 for every input.
    thresholds = normalise([np.inf, 0.0, np.inf, np.inf])
    point = evaluate(thresholds, conf, correct, prices)
    assert point.evaluated.tolist() == [0, 400, 0, 0] and (stop_index(conf, thresholds) == 1).all()


def test_parity_is_asked_with_confidence_not_on_a_point_estimate():
    """Two members as accurate as each other on validation B (90%) but wrong on different rows: the
    cheap one alone meets a 1-point tolerance in point estimate, not with 95% confidence. Where the
    cheap member is confident only on rows both get right, a cascade matches the reference exactly."""
    rows = 400
    correct = np.zeros((2, rows), dtype=bool)
    correct[0, :360] = True
    correct[1, 40:] = True
    conf = np.vstack([np.where(correct[0] & correct[1], 0.99, 0.5), np.ones(rows)])
    prices = Prices(np.zeros(2), np.array([1.0, 10.0]), 64)
    tuned = tune(conf, correct, prices, CascadeTarget.accuracy_parity, 0.01, None, 11, reference=1)
    assert tuned.feasible
    right = correct[stop_index(conf, tuned.thresholds), np.arange(rows)]
    assert np.array_equal(right, correct[1])  # not the cheap member alone, although its accuracy ties
    assert tuned.point.energy_j_per_sample < 10.0  # and cheaper than the reference alone
    assert parity_bound(correct[0], correct[1]) < -0.01 < parity_bound(correct[1], correct[1])
