"""Dynamic model selection on real parts: scikit-learn and PyTorch members on the bundled digits.

Most tests charge energy through a ledger: a sensor whose joules are a known cost per row for every
row a member's `proba` is called on, so "measured" energy is exact and what the strategy should be
charged can be computed independently of the code under test. The known costs put the members in
the reference system's order (tree cheapest, CNN heaviest), while the pool lists them shuffled: the
workload must order them by what it measured.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ecopipe.config import CONFIG_DIR, Attribution, CascadeTarget, Config, ConfigError, StrategyConfig
from ecopipe.job import run_job
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.selection.cascade import Point, evaluate, normalise, run_cascade, stop_index, tune
from ecopipe.selection.data import load_pool_data, split_indices
from ecopipe.selection.members import Member
from ecopipe.selection.oracle import cheapest_right, oracle_energy_at
from ecopipe.selection.pareto import CurvePoint, area_under, write_artifacts
from ecopipe.selection.workload import SelectionWorkload, build_selection_workload
from ecopipe.sensors.base import Component, EnergySensor, Source
from ecopipe.stages.inference import run_inference
from tests.conftest import FAST

# Joules per row: the reference system's order, cheapest first.
COSTS = {
    "decision_tree": 1e-4,
    "logistic_regression": 2e-4,
    "random_forest": 6e-4,
    "mlp_small": 1e-3,
    "small_cnn": 3e-3,
}
SHUFFLED = "pool.members=[small_cnn,random_forest,decision_tree,mlp_small,logistic_regression]"
QUICK = [*FAST, "pool=digits_5", "pool.cost_window_s=0.02", SHUFFLED]


class Ledger(EnergySensor):
    """Cumulative joules = sum of known cost x rows over every member call (tests only)."""

    component = Component.CPU
    source = Source.FAKE
    device = "ledger"
    resolution_s = 0.0

    def __init__(self) -> None:
        self.joules = 0.0
        self.rows: Counter[str] = Counter()

    def charge(self, name: str, rows: int) -> None:
        self.joules += COSTS[name] * rows
        self.rows[name] += rows

    def read_joules(self) -> float:
        return self.joules


def compose_cfg(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=[*QUICK, *overrides]))
    assert isinstance(cfg, Config)
    return cfg


@pytest.fixture(scope="module")
def ledger():
    """Every member call charges the ledger, for as long as this module's tests run."""
    book = Ledger()
    original = Member.proba

    def charged(self: Member, x: np.ndarray) -> np.ndarray:
        book.charge(self.name, len(x))
        return original(self, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Member, "proba", charged)
        yield book


def measured(ledger: Ledger, *overrides: str):
    cfg = compose_cfg(*overrides)
    workload = build_selection_workload(cfg)
    meter = EnergyMeter([ledger])
    workload.meter = meter
    meter.open()
    return workload, run_inference(workload, meter, cfg.monitor, cfg.batch_size)


@pytest.fixture(scope="module")
def cascade_run(ledger):
    return measured(ledger, "strategy=cascade")


@pytest.fixture(scope="module")
def budget_run(ledger):
    """A cascade tuned to a budget between the members' costs: it escalates through several."""
    return measured(
        ledger, "strategy=cascade", "strategy.target=energy_budget", "strategy.energy_budget_j_per_1k=0.25"
    )


@pytest.fixture(scope="module")
def router_run(ledger):
    return measured(ledger, "strategy=router")


# ----- splits -------------------------------------------------------------------------------------
def test_splits_are_disjoint_stratified_seeded_and_cover_every_row():
    cfg = compose_cfg()
    data = load_pool_data(cfg.pool, seed=0)
    parts = data.splits.as_dict()
    rows = np.concatenate(list(parts.values()))
    assert len(rows) == len(set(rows.tolist())) == len(data.y)  # disjoint and complete
    for a, b in pairwise(parts.values()):
        assert not set(a.tolist()) & set(b.tolist())
    overall = np.bincount(data.y) / len(data.y)
    for name, part in parts.items():
        share = np.bincount(data.y[part], minlength=data.classes) / len(part)
        assert np.abs(share - overall).max() < 0.02, name  # stratified
    assert len(parts["test"]) == math.ceil(0.25 * len(data.y))
    again = split_indices(data.y, 0.15, 0.15, 0.25, seed=0).as_dict()
    other = split_indices(data.y, 0.15, 0.15, 0.25, seed=1).as_dict()
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


@pytest.mark.parametrize("strategy", ["cascade", "router"])
def test_fitting_and_tuning_never_see_the_test_split(ledger, cascade_run, router_run, strategy):
    """Replace every test row by noise and every test label by a wrong one: whatever fit() learns
    (temperatures, member order, router labels and weights, thresholds) must not move."""
    reference = (cascade_run if strategy == "cascade" else router_run)[0]
    workload = build_selection_workload(compose_cfg(f"strategy={strategy}"))
    workload.meter = EnergyMeter([ledger])
    workload.load()
    data = workload.data
    test = data.splits.test
    x, y = data.x.copy(), data.y.copy()
    x[test] = np.random.default_rng(7).random((len(test), x.shape[1]), dtype=np.float32)
    y[test] = (y[test] + 1) % data.classes
    workload.data = type(data)(x, y, data.image_shape, data.splits)
    workload.fit()
    assert [m.name for m in workload.members] == [m.name for m in reference.members]
    assert [m.temperature for m in workload.members] == [m.temperature for m in reference.members]
    if strategy == "cascade":
        assert np.array_equal(workload.thresholds, reference.thresholds)
    else:
        assert np.array_equal(workload.router_labels, reference.router_labels)
        assert np.array_equal(workload.router.model.coef_, reference.router.model.coef_)
    assert "evaluation" not in workload.__dict__  # the test view is only built after the trials


# ----- honest charging ------------------------------------------------------------------------------
def test_members_are_ordered_by_measured_cost_not_list_position(cascade_run):
    workload, _ = cascade_run
    assert [m.name for m in workload.members] == sorted(COSTS, key=COSTS.get)
    assert workload.member_costs == pytest.approx([COSTS[m.name] for m in workload.members], rel=1e-9)


def test_cascade_is_charged_every_member_it_ran(ledger, budget_run):
    workload, inference = budget_run
    test_rows = len(workload.data.splits.test)
    ledger.rows.clear()
    workload.run_pass()  # one pass over the test split, as in every measured window
    seen = dict(ledger.rows)
    names = [m.name for m in workload.members]
    # The strategy escalated: the first member run saw every row, later ones only the unconfident rest.
    assert seen[next(n for n in names if n in seen)] == test_rows
    assert len(seen) >= 2
    counts = [seen[n] for n in names if n in seen]
    assert counts == sorted(counts, reverse=True)
    # Rows each member saw, from the cascade's row-wise rule on calibrated confidences.
    view = workload.evaluation.view
    reached = np.ones(test_rows, dtype=bool)
    for m, (name, threshold) in enumerate(zip(names, workload.thresholds, strict=True)):
        if m == len(names) - 1 or math.isfinite(threshold):
            assert seen.get(name, 0) == reached.sum(), name
            if m < len(names) - 1:
                reached &= view.conf[m] < threshold
        else:
            assert name not in seen  # a skipped member is never run, so never charged
    expected_per_1k = 1000 * sum(COSTS[n] * rows for n, rows in seen.items()) / test_rows
    # The stage's windows measured exactly that; the accounting says the same.
    assert inference.per_1k_samples(Attribution.gross).mean == pytest.approx(expected_per_1k, rel=1e-9)
    assert workload.accounting().per_1k_j == pytest.approx(expected_per_1k, rel=1e-9)
    assert workload.reconcile(inference)["selection.accounting_within_ci95"] == 1.0


def test_router_is_charged_for_itself_and_the_member_it_picks(ledger, router_run):
    workload, inference = router_run
    test_rows = len(workload.data.splits.test)
    ledger.rows.clear()
    workload.run_pass()
    assert sum(ledger.rows.values()) == test_rows  # each input runs exactly one member
    accounting = workload.accounting()
    assert accounting.evaluated["router"] == accounting.rows  # the router ran on every input
    member_j = sum(COSTS[n] * rows for n, rows in ledger.rows.items()) / test_rows
    router_j = workload.costs["router"].joules_per_sample
    assert router_j == 0.0  # the ledger charges members only: the router's measured cost is its own
    assert accounting.per_sample_j == pytest.approx(member_j + router_j, rel=1e-9)


def test_unsolvable_inputs_are_labelled_with_the_cheapest_member(router_run):
    costs = np.array([5.0, 1.0, 3.0])  # cheapest is position 1, not 0
    correct = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=bool)
    assert cheapest_right(correct, costs).tolist() == [0, 2, 1, 1]
    assert cheapest_right(np.zeros((3, 2), dtype=bool), costs).tolist() == [1, 1]
    # On the real pool: validation A rows no member gets right are routed to the cheapest member.
    workload, _ = router_run
    x_a, y_a = workload.data.part("validation_a")
    view = workload._view(x_a, y_a)
    hopeless = ~view.correct.any(axis=0)
    assert hopeless.any()
    assert (workload.router_labels[hopeless] == 0).all()
    first_right = view.correct.argmax(axis=0)
    assert np.array_equal(workload.router_labels[~hopeless], first_right[~hopeless])


def test_oracle_is_never_worse_in_energy_than_any_strategy_at_equal_accuracy(cascade_run, router_run):
    workload, _ = cascade_run
    ev = workload.evaluation
    costs = workload.member_costs
    frontier = workload.oracle_frontier()
    rng = np.random.default_rng(0)
    rows = ev.view.correct.shape[1]
    points: list[Point] = [ev.strategy, ev.heaviest, router_run[0].evaluation.strategy]
    points += [
        evaluate(
            normalise(rng.choice(np.append(np.linspace(0, 1, 11), np.inf), size=len(costs))),
            ev.view.conf,
            ev.view.correct,
            costs,
        )
        for _ in range(200)
    ]
    for _ in range(200):  # any per-input choice of one member
        choice = rng.integers(0, len(costs), size=rows)
        accuracy = float(ev.view.correct[choice, np.arange(rows)].mean())
        points.append(Point(accuracy, float(costs[choice].mean()), np.bincount(choice), np.bincount(choice)))
    for point in points:
        assert oracle_energy_at(point.accuracy, frontier) <= point.energy_j_per_sample * (1 + 1e-12)
        assert point.accuracy <= ev.oracle.accuracy
    assert ev.oracle.energy_j_per_sample == pytest.approx(oracle_energy_at(ev.oracle.accuracy, frontier))


# ----- what the tuned cascade achieves --------------------------------------------------------------
def test_accuracy_parity_cascade_holds_on_test_within_a_statistical_margin(cascade_run):
    """Thresholds meet `tolerance` on validation B; on fresh test rows the cascade-minus-heaviest
    accuracy is a paired difference whose standard error is sqrt(d) / n (McNemar), d the rows where
    exactly one of the two is right. Allow two standard errors beyond the tolerance."""
    workload, inference = cascade_run
    ev = workload.evaluation
    assert workload.tuned.feasible
    assert workload.tuned.point.accuracy >= workload.tuned.heaviest.accuracy - workload.tolerance - 1e-12
    rows = ev.view.correct.shape[1]
    stop = stop_index(ev.view.conf, workload.thresholds)
    cascade_right = ev.view.correct[stop, np.arange(rows)]
    heaviest_right = ev.view.correct[-1]
    discordant = int((cascade_right != heaviest_right).sum())
    margin = 2 * math.sqrt(discordant) / rows
    accuracy = inference.quality["accuracy"]
    assert accuracy == pytest.approx(cascade_right.mean())  # what ran in the window is what was tuned
    assert accuracy >= heaviest_right.mean() - workload.tolerance - margin
    assert inference.quality["savings_vs_heaviest"] > 0.3  # and it is cheaper than always-heaviest


def test_energy_budget_cascade_spends_within_its_budget_on_validation_b(budget_run):
    workload, _ = budget_run
    assert workload.tuned.feasible
    assert workload.tuned.point.energy_j_per_sample <= 0.25 / 1000
    assert workload.tuned.point.energy_j_per_sample < workload.tuned.heaviest.energy_j_per_sample


def test_energy_budget_target_trades_accuracy_for_budget():
    rng = np.random.default_rng(3)
    conf = rng.random((4, 400))
    correct = rng.random((4, 400)) < np.linspace(0.5, 0.95, 4)[:, None] * (0.5 + conf / 2)
    costs = np.array([1.0, 2.0, 5.0, 10.0])
    for budget in (1.5, 3.0, 6.0):
        tuned = tune(conf, correct, costs, CascadeTarget.energy_budget, 0.0, budget, 11)
        assert tuned.feasible and tuned.point.energy_j_per_sample <= budget
        cheaper = tune(conf, correct, costs, CascadeTarget.energy_budget, 0.0, budget / 2, 11)
        assert cheaper.point.accuracy <= tuned.point.accuracy


def test_run_cascade_passes_only_unconfident_rows_on():
    seen: list[int] = []

    def member(conf: float):
        def proba(x: np.ndarray) -> np.ndarray:
            seen.append(len(x))
            p = np.full((len(x), 2), 1 - conf)
            p[:, 0] = conf
            p[x[:, 0] > 0.5, 0] = 1.0  # rows flagged 1 are certain at every member
            p[x[:, 0] > 0.5, 1] = 0.0
            return p

        return proba

    x = np.array([[1.0], [0.0], [1.0], [0.0]])
    thresholds = np.array([0.9, np.inf, 0.0])
    labels, stop, evaluated = run_cascade([member(0.6), member(0.7), member(0.8)], thresholds, x)
    assert seen == [4, 2]  # the middle member is skipped; the last sees the two unconfident rows
    assert stop.tolist() == [0, 2, 0, 2] and evaluated.tolist() == [4, 0, 2]
    assert labels.tolist() == [0, 0, 0, 0]


def test_results_report_shares_parameters_and_the_pareto_curve(cascade_run, tmp_path):
    workload, inference = cascade_run
    q, facts = inference.quality, inference.facts
    shares = [q[f"share.{m.name}"] for m in workload.members]
    assert sum(shares) == pytest.approx(1.0)
    params = facts.extra["member_parameters"]
    expected = sum(params[m.name] * q[f"evaluated.{m.name}"] for m in workload.members)
    assert facts.effective_parameters == pytest.approx(expected)
    assert 0 < facts.effective_parameters < facts.parameters
    curve = [CurvePoint(**row) for row in facts.extra["pareto_curve"]]
    assert any(p.pareto for p in curve) and 0 < q["pareto_auc"] <= 1
    assert q["pareto_auc"] == pytest.approx(area_under(curve, workload.member_costs[-1]))
    paths = write_artifacts(facts.extra, tmp_path)
    assert [p.name for p in paths] == ["pareto.csv", "pareto.png", "selection.json"]
    assert paths[0].read_text().count("\n") == len(curve) + 1 and paths[1].stat().st_size > 1000
    assert json.loads(paths[2].read_text())["order"] == [m.name for m in workload.members]


def test_pareto_area_on_a_known_curve():
    curve = [
        CurvePoint(0.0, 0.5, 1.0, True),
        CurvePoint(0.5, 0.9, 2.0, True),
        CurvePoint(1.0, 0.8, 3.0, False),
    ]
    # best accuracy within e: 0 on [0,1), 0.5 on [1,2), 0.9 on [2,4]; normalised by 4
    assert area_under(curve, 4.0) == pytest.approx((0.5 * 1 + 0.9 * 2) / 4)


# ----- configuration ----------------------------------------------------------------------------------
def test_presets_name_tolerances_and_conflicts_are_refused():
    default = StrategyConfig().resolved_tolerance()
    assert default == StrategyConfig(preset="balanced").resolved_tolerance()
    assert StrategyConfig(preset="energy_saver").resolved_tolerance() > default
    assert StrategyConfig(preset="accuracy_first").resolved_tolerance() < default
    assert StrategyConfig(tolerance=0.05).resolved_tolerance() == 0.05
    with pytest.raises(ConfigError, match="both set"):
        StrategyConfig(preset="balanced", tolerance=0.05).resolved_tolerance()
    with pytest.raises(ConfigError, match="aggressive"):
        StrategyConfig(preset="aggressive").resolved_tolerance()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["strategy=cascade", "pool=none"], "needs a pool"),
        (["strategy=cascade", "strategy.target=energy_budget"], "energy_budget_j_per_1k"),
        (["strategy=router", "strategy.preset=balanced"], "accuracy-parity cascades only"),
        (["strategy=cascade", "pool.members=[decision_tree,ridge]"], "classifiers"),
        (["strategy=cascade", "pool.members=[decision_tree,nope]"], "not a conf/model option"),
        (["strategy=cascade", "precision=fp16"], "precision=fp32"),
    ],
)
def test_bad_selection_configs_are_refused_before_loading(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        build_selection_workload(compose_cfg(*overrides))


def test_fashion_mnist_offline_suggests_digits(monkeypatch):
    import datasets

    def offline(name: str, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)  # offline and uncached, whatever this host has
    workload = build_selection_workload(compose_cfg("pool=fashion_mnist_5", "strategy=cascade"))
    assert isinstance(workload, SelectionWorkload)
    with pytest.raises(ConfigError, match="pool=digits_5"):
        workload.load()


# ----- end to end -------------------------------------------------------------------------------------
def test_cascade_job_end_to_end(make_cfg, client):
    outcome = run_job(make_cfg("strategy=cascade", "pool=digits_5", "pool.cost_window_s=0.05"))
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["quality.accuracy"] > 0.9
    shares = [v for k, v in metrics.items() if k.startswith("quality.share.")]
    assert len(shares) == 5 and sum(shares) == pytest.approx(1.0)
    assert 0 < metrics["effective_parameters"] < metrics["parameters"]
    assert metrics["energy_per_1k_gross_j"] > 0
    assert run.data.params["strategy.name"] == "cascade" and run.data.params["pool.name"] == "digits_5"


def test_affine_cost_separates_per_call_from_per_row():
    """A member that costs 0.5 J per call plus 0.01 J per row, measured at batch 64 and batch 8."""
    from ecopipe.selection.costs import Accounting, measure_affine_cost

    book = Ledger()

    def run(batch: np.ndarray) -> None:
        book.joules += 0.5 + 0.01 * len(batch)

    cost = measure_affine_cost("m", EnergyMeter([book]), run, np.zeros((512, 3)), 64, window_s=0.0)
    assert cost.joules_per_call == pytest.approx(0.5)
    assert cost.per_row == pytest.approx(0.01)
    assert cost.joules_per_sample == pytest.approx(0.5 / 64 + 0.01)  # what ordering and tuning compare
    # A strategy that ran this member 10 times on 30 rows in all is charged 10 calls + 30 rows.
    accounting = Accounting(rows=100, evaluated={"m": 30}, calls={"m": 10}, costs={"m": cost})
    assert accounting.energy_j == pytest.approx(10 * 0.5 + 30 * 0.01)
