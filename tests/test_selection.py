"""Dynamic model selection on real parts: scikit-learn and PyTorch members on digits and digits_hard.

Most tests charge energy through a ledger: a sensor whose joules are a known cost per call plus a
known cost per row for every call of a member's `proba`, so "measured" energy is exact and what a
strategy should be charged can be computed independently of the code under test. The known costs
order the members differently from the pool's list: the workload must order them by what it priced.

The ledger is a stated exception to the rule that fakes stand in only for GPU power sensors and RAPL.
It stands in for an energy counter (what RAPL or NVML would be) behind the real EnergySensor interface,
but its counter is driven by the members' calls, so it needs to see them: `Ledger.charging()` wraps
`Member.proba` for the block it guards, never for the module. Why not the real CPU sensor: on this
machine it is an estimate that follows wall time, so every price and window would carry scheduling
noise, and the exact checks below (each arm's window = its accounting to 1e-9, prices = the known
costs, identical tuning with and without the test split) would have to become loose tolerances that
a wrong accounting could pass. The real path, real sensors and unwrapped members, is the job in
`test_study_job_end_to_end`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ecopipe.config import CONFIG_DIR, Attribution, CascadeTarget, Config, ConfigError, StrategyConfig
from ecopipe.job import run_job
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.monitor.stats import estimate
from ecopipe.selection import benchmark, study
from ecopipe.selection.cascade import Point, evaluate, normalise, parity_bound, stop_index, tune
from ecopipe.selection.costs import (
    Accounting,
    MemberCost,
    Prices,
    batch_sizes,
    batched,
    fit_affine,
    measure_member_cost,
)
from ecopipe.selection.data import load_pool_data, split_indices
from ecopipe.selection.members import Member
from ecopipe.selection.oracle import cheapest_right, oracle_energy_at, oracle_frontier
from ecopipe.selection.pareto import area_under
from ecopipe.selection.runners import CascadeRunner, SelectionBatch, concatenate
from ecopipe.selection.workload import MEMBER_PREFIX, build_selection_workload
from ecopipe.sensors.base import Component, EnergySensor, Source
from ecopipe.stages.inference import run_inference
from tests.conftest import FAST

# Joules per call and per row: an order unlike the pool's list (and unlike the members' real costs).
# The costliest, random_forest, is not the most accurate: the reference (svc_rbf) is another member.
COSTS = {
    "decision_tree": (2e-3, 1e-5),
    "logistic_regression": (1e-3, 3e-5),
    "random_forest": (8e-3, 1e-3),
    "mlp_small": (3e-3, 5e-5),
    "small_cnn": (5e-3, 4e-4),
    "svc_rbf": (6e-3, 8e-4),
}
ORDER = sorted(COSTS, key=lambda n: COSTS[n][0] / 64 + COSTS[n][1])  # price per input at batch 64
QUICK = [*FAST, "pool.cost_window_s=0.02"]
HARD = [*QUICK, "pool=digits_hard", "pool.max_samples=3000"]


class Ledger(EnergySensor):
    """Cumulative joules = sum of known per-call + per-row costs over every member call (tests only).

    A FAKE-source CPU counter (see the module's docstring for why this exception to the fakes rule).
    """

    component = Component.CPU
    source = Source.FAKE
    device = "ledger"
    resolution_s = 0.0

    def __init__(self) -> None:
        self.joules = 0.0
        self.calls: defaultdict[str, list[int]] = defaultdict(list)  # member -> rows of each call

    def charge(self, name: str, rows: int) -> None:
        per_call, per_row = COSTS[name]
        self.joules += per_call + per_row * rows
        self.calls[name].append(rows)

    def read_joules(self) -> float:
        return self.joules

    @contextmanager
    def charging(self) -> Iterator[None]:
        """Every member call inside the block charges this ledger; outside it members run untouched."""
        original = Member.proba

        def charged(member: Member, x: np.ndarray) -> np.ndarray:
            self.charge(member.name, len(x))
            return original(member, x)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Member, "proba", charged)
            yield


def compose_cfg(*overrides: str, base: list[str] = HARD) -> Config:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=[*base, *overrides]))
    assert isinstance(cfg, Config)
    return cfg


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    """One ledger for the module's study; it charges only inside its `charging()` blocks."""
    return Ledger()


def measured(ledger: Ledger, *overrides: str):
    cfg = compose_cfg(*overrides)
    workload = build_selection_workload(cfg)
    meter = EnergyMeter([ledger])
    meter.open()
    with ledger.charging():
        return workload, run_inference(workload, meter, cfg.monitor, cfg.batch_size)


@pytest.fixture(scope="module")
def study_run(ledger, tmp_path_factory):
    """A cascade job's study on a small digits_hard, with its findings."""
    workload, inference = measured(ledger, "strategy=cascade")
    findings = workload.findings(inference, tmp_path_factory.mktemp("findings"))
    return workload, inference, findings


# ----- data -------------------------------------------------------------------------------------------
def test_digits_splits_are_disjoint_stratified_seeded_and_cover_every_row():
    data = load_pool_data(compose_cfg("pool=digits_5", base=QUICK).pool, seed=0)
    parts = data.splits.as_dict()
    rows = np.concatenate(list(parts.values()))
    assert len(rows) == len(set(rows.tolist())) == len(data.y)
    overall = np.bincount(data.y) / len(data.y)
    for name, part in parts.items():
        share = np.bincount(data.y[part], minlength=data.classes) / len(part)
        assert np.abs(share - overall).max() < 0.02, name
    assert len(parts["test"]) == math.ceil(0.25 * len(data.y))
    again = split_indices(data.y, 0.15, 0.15, 0.25, seed=0).as_dict()
    other = split_indices(data.y, 0.15, 0.15, 0.25, seed=1).as_dict()
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_digits_hard_is_seeded_graded_and_split_by_source_digit():
    first, again, other = benchmark.generate(400, 0), benchmark.generate(400, 0), benchmark.generate(400, 1)
    assert np.array_equal(first.x, again.x) and not np.array_equal(first.x, other.x)
    assert first.x.dtype == np.float32 and first.x.min() >= 0 and first.x.max() <= 1
    assert len(np.unique(first.severity)) == benchmark.SEVERITY_LEVELS
    # Severity 0 is the bundled digit itself; severer rows move further from it.
    bundled = benchmark.datasets.load_digits().data / 16.0
    distance = np.abs(first.x - bundled[first.source]).mean(axis=1)
    assert distance[first.severity == 0].max() < 1e-6
    means = [distance[first.severity == s].mean() for s in np.unique(first.severity)]
    assert means == sorted(means)
    assert np.array_equal(first.y, benchmark.source_labels()[first.source])
    # The default pool generates at least 20,000 rows; no source digit lands in two splits.
    cfg = compose_cfg("pool=digits_hard", base=QUICK)
    assert cfg.pool.max_samples is None and benchmark.ROWS >= 20_000
    data = load_pool_data(compose_cfg().pool, seed=0)
    generated = benchmark.generate(3000, 0)
    sources = [set(generated.source[part].tolist()) for part in data.splits.as_dict().values()]
    for a, b in pairwise(sources):
        assert not a & b
    assert sum(len(p) for p in data.splits.as_dict().values()) == 3000


def test_fashion_mnist_loads_a_local_hub_format_data_set(tmp_path, monkeypatch):
    """The real `datasets` path on a local parquet data set in the hub's layout and features, offline."""
    import datasets
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(10)])}
    )
    pixels = {}
    for split, rows in (("train", 60), ("test", 20)):
        arrays = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        labels = np.arange(rows) % 10
        pixels[split] = (arrays, labels)
        part = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in arrays], "label": labels.tolist()}, features=features
        )
        (tmp_path / "data").mkdir(exist_ok=True)
        part.to_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    cfg = compose_cfg("pool=fashion_mnist_5", f"pool.hf_id={tmp_path}", base=QUICK)
    data = load_pool_data(cfg.pool, seed=0)
    assert data.x.shape == (80, 784) and data.image_shape == (1, 28, 28)
    expected = np.concatenate([pixels["train"][0], pixels["test"][0]]).reshape(80, -1) / 255.0
    order = np.lexsort(expected.T[::-1])
    assert np.allclose(data.x[np.lexsort(data.x.T[::-1])], expected[order], atol=1e-6)
    assert np.bincount(data.y).tolist() == [8] * 10


def test_fashion_mnist_offline_suggests_an_offline_pool(tmp_path, monkeypatch):
    """The real `datasets` call, offline (conftest) with empty caches: its own error, wrapped in ours."""
    import datasets
    import huggingface_hub

    # Empty caches, so a data set cached on a developer's machine cannot answer.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert datasets.config.HF_HUB_OFFLINE
    workload = build_selection_workload(compose_cfg("pool=fashion_mnist_5", "strategy=cascade", base=QUICK))
    with pytest.raises(ConfigError) as refused:
        workload.load()
    message = str(refused.value)
    assert message.startswith("pool=fashion_mnist_5 needs Fashion-MNIST") and "use pool=digits_5" in message
    # Both hub ids were tried, each refused by `datasets` itself for being offline.
    for name in ("zalando-datasets/fashion_mnist", "fashion_mnist"):
        refusal = f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)"
        assert f"{name}: ConnectionError: {refusal}" in message


# ----- reference, splits, pricing ----------------------------------------------------------------------
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
    assert np.array_equal(workload.router.weights, reference.router.weights)
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


# ----- strategies ----------------------------------------------------------------------------------------
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
    honest = workload._cross_check(name, inference.per_1k_samples(Attribution.gross).mean)
    assert honest["accounting_within_tolerance"] == 1.0
    doubled = workload._cross_check(name, inference.per_1k_samples(Attribution.gross).mean / 2)
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
    prices = workload.prices(router=True)
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


# ----- what the study reports ----------------------------------------------------------------------------
def test_savings_carry_a_95_percent_interval():
    arm = estimate([1.0, 1.1, 0.9, 1.05, 0.95])
    reference = estimate([10.0, 11.0, 9.0, 10.5, 9.5])
    saved = study.savings(arm, reference)
    assert saved.value == pytest.approx(0.9)
    assert saved.low < 0.9 < saved.high and saved.high - saved.low < 0.05
    noisy = study.savings(estimate([0.6, 1.4, 1.0, 0.7, 1.3]), reference)
    assert noisy.high - noisy.low > saved.high - saved.low
    assert math.isnan(study.savings(estimate([1.0]), reference).low)  # one trial: no interval claimed
    right = np.array([1, 1, 0, 1] * 50, dtype=bool)
    delta = study.accuracy_difference(right, np.ones(200, dtype=bool))
    assert delta.value == pytest.approx(-0.25) and delta.low < -0.25 < delta.high


def test_every_member_and_strategy_is_measured_alike_in_one_job(study_run, tmp_path):
    workload, inference, findings = study_run
    members = {f"{MEMBER_PREFIX}{m.name}" for m in workload.members}
    strategies = set(workload.plans) - {workload.headline}
    assert set(inference.arms) == members | strategies
    for name, arm in inference.arms.items():
        assert len(arm.trials) == len(inference.trials), name  # the same protocol
        # What ran in the window answered as the members' outputs say it should.
        assert arm.quality["accuracy"] == pytest.approx(workload.right_on_test(name).mean()), name
        # Ledger energy is exact: the measured arm is what its pass was charged.
        runner = workload.runner_for(name)
        assert arm.per_1k_samples().mean == pytest.approx(
            runner.accounting(workload.costs).per_1k_j, rel=1e-9
        )
    m = findings.metrics
    reference = f"{MEMBER_PREFIX}{workload.members[workload.reference].name}"
    costliest = f"{MEMBER_PREFIX}{workload.members[-1].name}"
    energy = {n: a.per_1k_samples().mean for n, a in inference.arms.items()}
    energy[workload.headline] = inference.per_1k_samples(Attribution.gross).mean
    for name in energy:
        assert m[f"selection.{name}.savings_measured_vs_reference"] == pytest.approx(
            1 - energy[name] / energy[reference]
        )
        assert m[f"selection.{name}.savings_measured_vs_costliest"] == pytest.approx(
            1 - energy[name] / energy[costliest]
        )
        assert f"selection.{name}.savings_measured_vs_reference_ci95_low" in m
    assert m[f"selection.{reference}.savings_measured_vs_reference"] == 0.0
    # The accounting's savings carry their own name; with exact ledger energy the two agree here.
    assert m["selection.savings_accounted_vs_reference"] == pytest.approx(
        m["selection.savings_measured_vs_reference"]
    )
    assert (
        m["selection.savings_measured_vs_reference"]
        == m[f"selection.{workload.headline}.savings_measured_vs_reference"]
    )
    assert 0 < m["selection.pareto_auc"] <= m["selection.oracle_pareto_auc"] <= 1
    names = sorted(p.name for p in findings.files)
    assert names == ["pareto.csv", "pareto.png", "selection.json"]
    png = next(p for p in findings.files if p.suffix == ".png")
    assert png.stat().st_size > 10_000
    table = json.loads(next(p for p in findings.files if p.suffix == ".json").read_text())
    assert {row["arm"] for row in table["arms"]} == set(energy)


def test_pareto_area_on_a_known_curve():
    # best accuracy within e: 0 on [0,1), 0.5 on [1,2), 0.9 on [2,4]; normalised by 4
    assert area_under([0.5, 0.9, 0.8], [1.0, 2.0, 3.0], 4.0) == pytest.approx((0.5 * 1 + 0.9 * 2) / 4)


# ----- configuration ---------------------------------------------------------------------------------
def test_presets_name_tolerances_and_conflicts_are_refused():
    default = StrategyConfig().resolved_tolerance()
    assert default == StrategyConfig(preset="balanced").resolved_tolerance()
    assert StrategyConfig(preset="energy_saver").resolved_tolerance() > default
    assert StrategyConfig(preset="accuracy_first").resolved_tolerance() < default
    with pytest.raises(ConfigError, match="both set"):
        StrategyConfig(preset="balanced", tolerance=0.05).resolved_tolerance()
    with pytest.raises(ConfigError, match="aggressive"):
        StrategyConfig(preset="aggressive").resolved_tolerance()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["strategy=cascade", "pool=none"], "needs a pool"),
        (["strategy=cascade", "strategy.target=energy_budget"], "energy_budget_j_per_1k"),
        (["strategy=router", "strategy.target=energy_budget"], "energy_budget_j_per_1k"),
        (["strategy=oracle", "+strategy.preset=balanced"], "cascades and routers only"),
        (["strategy=cascade", "pool.members=[decision_tree,ridge]"], "classifiers"),
        (["strategy=cascade", "pool.members=[decision_tree,nope]"], "not a conf/model option"),
        (["strategy=cascade", "pool.dataset=mnist"], "digits_hard"),
        (["strategy=cascade", "precision=fp16"], "precision=fp32"),
    ],
)
def test_bad_selection_configs_are_refused_before_loading(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        build_selection_workload(compose_cfg(*overrides))


# ----- end to end -----------------------------------------------------------------------------------
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
    assert run.data.tags["ecopipe.workload.reference"] in run.data.params["pool.members"]
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id, "selection")}
    assert artifacts == {"selection/pareto.csv", "selection/pareto.png", "selection/selection.json"}
    # This machine estimates energy: the summary says the savings are then time savings, names the
    # reference's energy an ESTIMATE, and calls nothing measured (the pareto plot's axis is built from
    # the same label: test_pareto_axis_names_what_the_markers_are).
    assert "savings vs reference" in outcome.summary and "time savings" in outcome.summary
    assert ", ESTIMATE, gross)" in outcome.summary
    assert not re.search(r"\bmeasured\b", outcome.summary, re.IGNORECASE), outcome.summary


def test_pareto_axis_names_what_the_markers_are(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from ecopipe.selection.pareto import CurvePoint, MeasuredPoint, plot_study

    labels: list[str] = []
    real = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, text, *a, **k: labels.append(text) or real(ax, text))
    frontier = (np.array([0.0, 0.9]), np.array([0.001, 0.002]))
    curve = [CurvePoint(0.5, 0.9, 0.002, True)]
    points = {"member:a": MeasuredPoint(2.0, 1.5, 2.5, 0.9, True)}
    plot_study(tmp_path / "p.png", frontier, curve, points, "member:a", "t", "n", "ESTIMATE")
    assert labels == ["energy per 1,000 inferences (J, log scale); markers: ESTIMATE, with their band"]


def test_pareto_keys_arms_by_kind_and_number_and_explains_the_priced_curve(tmp_path, monkeypatch):
    """A colour per kind of arm (not per arm), a number beside each marker with its name in the key,
    and a caption saying the dashed curve is an accounting, not a measurement."""
    from matplotlib.figure import Figure

    from ecopipe.selection.pareto import CurvePoint, MeasuredPoint, plot_study

    figures, real = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or real(fig, *a, **k))
    arms = ["member_a", "member_b", "member_c", "cascade_x", "cascade_y", "router_z", "oracle"]
    points = {name: MeasuredPoint(1.0 + i, 0.5 + i, 1.5 + i, 0.9, name.startswith("member")) for i, name in
              enumerate(arms)}  # fmt: skip
    curve = [CurvePoint(0.5, 0.9, 0.002, True)]
    plot_study(tmp_path / "p.png", (np.array([0.0, 0.9]), np.array([0.001, 0.002])), curve, points,
               "member_c", "t", "n", "ESTIMATE")  # fmt: skip
    (fig,) = figures
    ax = fig.axes[0]
    key = [t.get_text() for t in ax.get_legend().get_texts()]
    assert key[:2] == ["oracle frontier (priced bound)", "cascade curve, one shared threshold (priced)"]
    assert key[2:] == [
        f"{i}  {n}{' (reference)' if n == 'member_c' else ''}" for i, n in enumerate(arms, start=1)
    ]
    # What the markers' energy is, from the job's label: an estimate is never called measured.
    assert ax.get_legend().get_title().get_text() == "arms, energy from their own windows: ESTIMATE"
    assert not any("measured" in text for text in key)
    colours = {n: h.get_color() for n, h in zip(arms, ax.get_legend().legend_handles[2:], strict=True)}
    assert colours["member_a"] == colours["member_b"] == colours["member_c"] != colours["cascade_x"]
    assert colours["cascade_x"] == colours["cascade_y"] and len(set(colours.values())) == 4
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(i) for i in range(1, 8))
    assert any("accounting, not a measurement" in t.get_text() for t in fig.texts)
