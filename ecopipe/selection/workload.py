"""A selection strategy as a Workload, so the inference stage measures the whole strategy.

load() reads the pool's data and builds the members; fit() (metered as the fit phase) trains them on
the train split, temperature-scales them on validation A, measures each one's energy per sample,
orders them by it, fits the router on validation A and tunes the cascade thresholds on validation B;
batches() are the test split at the job's batch size; predict() runs the strategy on a batch (a
cascade runs member 1 on the batch and passes the unconfident rows on), inside the stage's windows.

The per-member accounting (each member's measured cost per call and per row x the calls and inputs it
ran, plus the router's) is reported beside the stage's measurement by `reconcile`, which warns when the two
disagree beyond the measurement's 95% confidence interval.

Hook for the job: set `workload.meter` to the job's (open) EnergyMeter before the stage runs, so the
member costs come from the same sensors as the windows; without it the workload opens a private
meter on freshly discovered sensors for the cost measurement only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ecopipe.config import (
    Attribution,
    CascadeTarget,
    Config,
    ConfigError,
    Framework,
    ModelConfig,
    PoolConfig,
    Precision,
    StrategyConfig,
    StrategyName,
)
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.selection.cascade import Point, Tuned, evaluate, run_cascade, shared_grid, tune
from ecopipe.selection.costs import Accounting, MemberCost, batched, measure_affine_cost
from ecopipe.selection.data import PoolData, load_pool_data
from ecopipe.selection.members import Member, build_member, member_config
from ecopipe.selection.oracle import cheapest_right, oracle_frontier, oracle_point
from ecopipe.selection.pareto import CurvePoint, area_under, cascade_curve, curve_rows
from ecopipe.selection.router import Router
from ecopipe.workloads.base import ModelFacts, Workload

if TYPE_CHECKING:
    from ecopipe.stages.inference import InferenceResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionBatch:
    x: np.ndarray
    rows: np.ndarray  # positions in the test split (the oracle's hindsight choice is looked up by row)

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class View:
    """Every member's calibrated confidence and correctness on one split: (members x rows) matrices."""

    conf: np.ndarray
    correct: np.ndarray
    predicted: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """The test split seen through every member, after the measured trials: for reporting only."""

    view: View
    strategy: Point  # the tuned strategy on test under the per-member accounting
    heaviest: Point
    oracle: Point
    members: dict[str, tuple[float, float]]  # name -> (energy J per sample, accuracy)
    curve: list[CurvePoint]
    pareto_auc: float
    router_label_accuracy: float | None


class SelectionWorkload(Workload):
    def __init__(
        self,
        strategy: StrategyConfig,
        pool: PoolConfig,
        members: Sequence[ModelConfig],
        batch_size: int,
        seed: int,
        device: str = "cpu",
        fake_gpu_watts: float | None = None,
    ) -> None:
        self.strategy, self.pool = strategy, pool
        self.member_cfgs = list(members)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.fake_gpu_watts = fake_gpu_watts
        self.meter: EnergyMeter | None = None  # the job's meter; see the module docstring
        self.tolerance = strategy.resolved_tolerance() if self._parity else None
        self.data: PoolData | None = None
        self.members: list[Member] = []  # ordered by measured energy per sample after fit()
        self.costs: dict[str, MemberCost] = {}
        self.router: Router | None = None
        self.router_labels: np.ndarray | None = None  # validation A oracle labels (member positions)
        self.tuned: Tuned | None = None
        self.thresholds: np.ndarray | None = None
        self.validation_b: View | None = None
        self._oracle_choice: np.ndarray | None = None
        self._batches: list[SelectionBatch] = []
        self._reset_counters()

    @property
    def _parity(self) -> bool:
        return (
            self.strategy.name is StrategyName.cascade
            and self.strategy.target is CascadeTarget.accuracy_parity
        )

    def _reset_counters(self) -> None:
        self._rows = 0
        self._evaluated = np.zeros(len(self.member_cfgs), dtype=np.int64)
        self._calls = np.zeros(len(self.member_cfgs), dtype=np.int64)
        self._router_rows = 0
        self._router_calls = 0

    # ----- the Workload contract -------------------------------------------------------------
    def load(self) -> None:
        self.data = load_pool_data(self.pool, self.seed)
        self.members = [
            build_member(cfg, self.data.classes, self.seed, self.data.image_shape, self.device)
            for cfg in self.member_cfgs
        ]
        x_test, _ = self.data.part("test")
        rows = np.arange(len(x_test))
        self._batches = [
            SelectionBatch(x, r)
            for x, r in zip(batched(x_test, self.batch_size), batched(rows, self.batch_size), strict=True)
        ]
        self.__dict__.pop("evaluation", None)
        self._reset_counters()

    def fit(self) -> bool:
        assert self.data is not None
        x_train, y_train = self.data.part("train")
        x_a, y_a = self.data.part("validation_a")
        x_b, y_b = self.data.part("validation_b")
        for member in self.members:
            member.fit(x_train, y_train)
            member.calibrate(x_a, y_a)
            log.info("pool member %s fitted; temperature %.3g", member.name, member.temperature)
        self._measure_costs(np.concatenate([x_a, x_b]))
        self.members.sort(key=lambda m: self.costs[m.name].joules_per_sample)  # stable: ties keep list order
        costs = self.member_costs
        log.info(
            "pool ordered by measured energy per sample: %s",
            ", ".join(f"{m.name} {c * 1e3:.3g} mJ" for m, c in zip(self.members, costs, strict=True)),
        )
        self.validation_b = self._view(x_b, y_b)
        if self.strategy.name is StrategyName.router:
            self.router_labels = cheapest_right(self._view(x_a, y_a).correct, costs)
            self.router = Router(self.seed)
            self.router.fit(x_a, self.router_labels)
            self._measure_router_cost(np.concatenate([x_a, x_b]))
        elif self.strategy.name is StrategyName.cascade:
            self.tuned = self._tune(self.validation_b, costs)
            self.thresholds = self.tuned.thresholds
        elif self.strategy.name is StrategyName.oracle:
            # Hindsight by definition: the oracle alone reads the test labels; it is a bound, not a method.
            self._oracle_choice = cheapest_right(self.evaluation.view.correct, costs)
        return True

    def batches(self) -> Sequence[SelectionBatch]:
        return self._batches

    def predict(self, batch: SelectionBatch) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, member position that answered) for each row of the batch."""
        if batch is self._batches[0]:  # a pass starts: the accounting covers one whole pass, not warm-up
            self._reset_counters()
        probas = [m.proba for m in self.members]
        if self.strategy.name is StrategyName.cascade:
            assert self.thresholds is not None
            labels, chosen, evaluated = run_cascade(probas, self.thresholds, batch.x)
            self._evaluated += evaluated
            self._calls += evaluated > 0
        else:
            if self.strategy.name is StrategyName.router:
                assert self.router is not None
                chosen = self.router.predict(batch.x)
                self._router_rows += len(batch)
                self._router_calls += 1
            else:
                assert self._oracle_choice is not None
                chosen = self._oracle_choice[batch.rows]
            labels = np.empty(len(batch), dtype=np.int64)
            for m in np.unique(chosen):
                rows = chosen == m
                labels[rows] = probas[m](batch.x[rows]).argmax(axis=1)
                self._evaluated[m] += int(rows.sum())
                self._calls[m] += 1
        self._rows += len(batch)
        return labels, chosen

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def quality(self, outputs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        """Test-split results: `accuracy` (of what ran in the window), `share.<member>` (inputs it
        answered), `evaluated.<member>` (inputs it ran on), `savings_vs_heaviest` and the energies
        marked `accounted` (per-member accounting: measured cost per call and per row x calls and
        inputs), the oracle's, `pareto_auc`, thresholds and tolerance (cascade), the router's cost and
        label accuracy."""
        assert self.data is not None
        labels = np.concatenate([o[0] for o in outputs])
        chosen = np.concatenate([o[1] for o in outputs])
        truth = self.data.part("test")[1][: len(labels)]
        ev = self.evaluation
        accounting = self.accounting()
        heaviest_j = self.member_costs[-1]
        shares = np.bincount(chosen, minlength=len(self.members)) / len(chosen)
        evaluated = self._evaluated / max(self._rows, 1)
        result: dict[str, float] = {
            "accuracy": float((labels == truth).mean()),
            "heaviest_accuracy": ev.heaviest.accuracy,
            "accuracy_vs_heaviest": float((labels == truth).mean()) - ev.heaviest.accuracy,
            "energy_per_1k_accounted_j": accounting.per_1k_j,
            "heaviest_energy_per_1k_j": 1000 * heaviest_j,
            "savings_vs_heaviest": 1 - accounting.per_sample_j / heaviest_j,
            "oracle_accuracy": ev.oracle.accuracy,
            "oracle_energy_per_1k_accounted_j": 1000 * ev.oracle.energy_j_per_sample,
            "pareto_auc": ev.pareto_auc,
        }
        for position, member in enumerate(self.members):
            result[f"share.{member.name}"] = float(shares[position])
            result[f"evaluated.{member.name}"] = float(evaluated[position])
            result[f"member_accuracy.{member.name}"] = ev.members[member.name][1]
            result[f"member_energy_per_1k_j.{member.name}"] = 1000 * self.member_costs[position]
            if self.thresholds is not None and math.isfinite(self.thresholds[position]):
                result[f"threshold.{member.name}"] = float(self.thresholds[position])
        if self.tolerance is not None:
            result["tolerance"] = self.tolerance
        if self.tuned is not None:
            result["validation_b_accuracy"] = self.tuned.point.accuracy
            result["validation_b_heaviest_accuracy"] = self.tuned.heaviest.accuracy
            result["target_met_on_validation_b"] = float(self.tuned.feasible)
        if self.router is not None:
            result["router_share_of_inputs"] = self._router_rows / max(self._rows, 1)
            result["router_energy_per_1k_j"] = 1000 * self.costs["router"].joules_per_sample
            assert ev.router_label_accuracy is not None
            result["router_label_accuracy"] = ev.router_label_accuracy
        return result

    def facts(self) -> ModelFacts:
        rows = max(self._rows, 1)
        params = {m.name: m.parameters for m in self.members}
        router_params = self.router.parameters if self.router is not None else 0
        effective = sum(params[m.name] * self._evaluated[i] / rows for i, m in enumerate(self.members))
        effective += router_params * self._router_rows / rows
        ev = self.evaluation
        extra: dict[str, Any] = {
            "strategy": self.strategy.name.value,
            "pool": self.pool.name,
            "order": [m.name for m in self.members],
            "member_cost_j_per_sample": {n: c.joules_per_sample for n, c in self.costs.items()},
            "member_parameters": params,
            "pareto_curve": curve_rows(ev.curve),
            "pareto_auc": ev.pareto_auc,
            "marks": {
                self.strategy.name.value: (ev.strategy.energy_j_per_sample, ev.strategy.accuracy),
                "oracle": (ev.oracle.energy_j_per_sample, ev.oracle.accuracy),
                **{f"only {name}": point for name, point in ev.members.items()},
            },
        }
        if self.thresholds is not None:
            pairs = zip(self.members, self.thresholds, strict=True)
            extra["thresholds"] = {m.name: float(t) for m, t in pairs}
        dtypes = "+".join(sorted({m.dtype for m in self.members}))
        total = int(sum(params.values()) + router_params)
        return ModelFacts(total, float(effective), dtypes, "fitted", extra)

    # ----- measured costs and their accounting -----------------------------------------------
    @property
    def member_costs(self) -> np.ndarray:
        """Joules per sample of each member, in pool order (ascending once fitted)."""
        return np.array([self.costs[m.name].joules_per_sample for m in self.members])

    def _with_meter(self, action: Any) -> Any:
        if self.meter is not None:
            return action(self.meter)
        from ecopipe.hardware import gpu_index
        from ecopipe.monitor.energy import machine_meter

        index = gpu_index(self.device)
        log.info("no meter handed over by the job: member costs use a private meter on the same sensors")
        meter = machine_meter([] if index is None else [index], self.fake_gpu_watts, self.synchronize)
        meter.open()
        try:
            return action(meter)
        finally:
            meter.close()

    def _measure_costs(self, x: np.ndarray) -> None:
        def measure(meter: EnergyMeter) -> None:
            for member in self.members:
                self.costs[member.name] = measure_affine_cost(
                    member.name, meter, member.proba, x, self.batch_size, self.pool.cost_window_s
                )

        self._with_meter(measure)

    def _measure_router_cost(self, x: np.ndarray) -> None:
        assert self.router is not None
        router = self.router
        window_s = self.pool.cost_window_s
        self.costs["router"] = self._with_meter(
            lambda meter: measure_affine_cost("router", meter, router.predict, x, self.batch_size, window_s)
        )

    def accounting(self) -> Accounting:
        """Measured cost per call and per row x calls and inputs, over the last pass over the test split."""
        evaluated = {m.name: int(self._evaluated[i]) for i, m in enumerate(self.members)}
        calls = {m.name: int(self._calls[i]) for i, m in enumerate(self.members)}
        if self.router is not None:
            evaluated["router"], calls["router"] = self._router_rows, self._router_calls
        return Accounting(self._rows, evaluated, calls, self.costs)

    def reconcile(self, inference: InferenceResult) -> dict[str, float]:
        """The stage's measurement of the strategy beside the per-member accounting (gross joules)."""
        measured = inference.per_1k_samples(Attribution.gross)
        accounted = self.accounting().per_1k_j
        gap = accounted - measured.mean
        checkable = math.isfinite(measured.ci95)
        within = checkable and abs(gap) <= measured.ci95 + 1e-9 * abs(measured.mean)  # + rounding
        if not checkable:
            log.warning(
                "selection accounting (%.4g J/1k) cannot be checked against the measurement "
                "(%.4g J/1k): one trial gives no confidence interval",
                accounted,
                measured.mean,
            )
        elif not within:
            log.warning(
                "selection accounting says %.4g J per 1,000 inferences, the measured window %.4g ±%.2g "
                "(95%% CI): they disagree by %+.1f%%. The window is the measurement; the accounting charges "
                "each member per call and per row as measured alone, and leaves out the strategy's own "
                "bookkeeping (splitting batches, comparing confidences).",
                accounted,
                measured.mean,
                measured.ci95,
                100 * gap / measured.mean,
            )
        heaviest_per_1k = 1000 * self.member_costs[-1]
        return {
            "selection.energy_per_1k_measured_j": measured.mean,
            "selection.energy_per_1k_accounted_j": accounted,
            "selection.accounting_gap_rel": gap / measured.mean if measured.mean else math.nan,
            "selection.accounting_within_ci95": float(within),
            "selection.savings_vs_heaviest_measured": float(1 - measured.mean / heaviest_per_1k),
        }

    # ----- tuning and reporting --------------------------------------------------------------
    def _view(self, x: np.ndarray, y: np.ndarray) -> View:
        probas = [np.concatenate([m.proba(b) for b in batched(x, self.batch_size)]) for m in self.members]
        conf = np.stack([p.max(axis=1) for p in probas])
        predicted = np.stack([p.argmax(axis=1) for p in probas])
        return View(conf, predicted == y[None, :], predicted)

    def _tune(self, view: View, costs: np.ndarray) -> Tuned:
        budget = self.strategy.energy_budget_j_per_1k
        tuned = tune(
            view.conf,
            view.correct,
            costs,
            self.strategy.target,
            self.tolerance or 0.0,
            None if budget is None else budget / 1000,
            self.strategy.threshold_grid,
        )
        if not tuned.feasible:
            log.warning(
                "cascade target %s cannot be met on validation B (budget %s J per 1,000 below the "
                "cheapest member's %.4g?): the closest thresholds are used",
                self.strategy.target.value,
                budget,
                1000 * costs[0],
            )
        log.info(
            "cascade thresholds %s after %d evaluations: validation B accuracy %.4f (heaviest %.4f), "
            "%.4g J per 1,000 by accounting",
            np.round(tuned.thresholds, 4).tolist(),
            tuned.evaluations,
            tuned.point.accuracy,
            tuned.heaviest.accuracy,
            1000 * tuned.point.energy_j_per_sample,
        )
        return tuned

    @cached_property
    def evaluation(self) -> Evaluation:
        """Every member on the test split, once, outside the measured windows: for the report only."""
        assert self.data is not None and self.validation_b is not None
        x_test, y_test = self.data.part("test")
        view = self._view(x_test, y_test)
        costs = self.member_costs
        members = len(self.members)
        heaviest = evaluate(np.array([np.inf] * (members - 1) + [0.0]), view.conf, view.correct, costs)
        oracle = oracle_point(view.correct, costs)
        router_label_accuracy = None
        if self.strategy.name is StrategyName.cascade:
            assert self.thresholds is not None
            strategy = evaluate(self.thresholds, view.conf, view.correct, costs)
        elif self.strategy.name is StrategyName.router:
            assert self.router is not None
            choice = self.router.predict(x_test)
            counts = np.bincount(choice, minlength=members)
            energy = float(costs[choice].mean()) + self.costs["router"].joules_per_sample
            accuracy = float(view.correct[choice, np.arange(len(y_test))].mean())
            strategy = Point(accuracy, energy, counts, counts)
            router_label_accuracy = float((choice == cheapest_right(view.correct, costs)).mean())
        else:
            strategy = oracle
        curve = cascade_curve(
            view.conf, view.correct, costs, shared_grid(self.validation_b.conf, self.strategy.threshold_grid)
        )
        return Evaluation(
            view=view,
            strategy=strategy,
            heaviest=heaviest,
            oracle=oracle,
            members={
                m.name: (float(c), float(right.mean()))
                for m, c, right in zip(self.members, costs, view.correct, strict=True)
            },
            curve=curve,
            pareto_auc=area_under(curve, float(costs[-1])),
            router_label_accuracy=router_label_accuracy,
        )

    def oracle_frontier(self) -> tuple[np.ndarray, np.ndarray]:
        ev = self.evaluation
        return oracle_frontier(ev.view.correct, self.member_costs)


def _check(cfg: Config) -> list[ModelConfig]:
    """Everything about a selection job that can be refused before anything loads."""
    strategy, pool = cfg.strategy, cfg.pool
    if pool.name == "none" or not pool.members:
        raise ConfigError(
            f"strategy={strategy.name.value} needs a pool of models: add pool=digits_5 "
            "(offline) or pool=fashion_mnist_5."
        )
    if len(pool.members) < 2:
        raise ConfigError(f"pool={pool.name} has {len(pool.members)} member; a selection needs at least 2.")
    if len(set(pool.members)) != len(pool.members):
        raise ConfigError(f"pool={pool.name} lists a member twice: {pool.members}.")
    if cfg.precision.name is not Precision.fp32:
        raise ConfigError(
            f"precision={cfg.precision.name.value} is not supported for a pool; use precision=fp32."
        )
    keys = ("validation_a_fraction", "validation_b_fraction", "test_fraction")
    fractions = {k: getattr(pool, k) for k in keys}
    for key, value in fractions.items():
        if not 0 < value < 1:
            raise ConfigError(f"pool.{key}={value} is invalid: it must lie strictly between 0 and 1.")
    if sum(fractions.values()) >= 0.9:
        raise ConfigError(f"pool fractions {fractions} leave under 10% of the rows to train the members.")
    if pool.cost_window_s <= 0:
        raise ConfigError(
            f"pool.cost_window_s={pool.cost_window_s} is invalid: it must be a positive number of seconds."
        )
    if pool.max_samples is not None and pool.max_samples <= 0:
        raise ConfigError(f"pool.max_samples={pool.max_samples} is invalid: it must be a positive integer.")
    if strategy.threshold_grid < 2:
        raise ConfigError(f"strategy.threshold_grid={strategy.threshold_grid} is invalid: use 2 or more.")
    if strategy.name is StrategyName.cascade and strategy.target is CascadeTarget.accuracy_parity:
        tolerance = strategy.resolved_tolerance()
        if not 0 <= tolerance < 1:
            raise ConfigError(f"strategy.tolerance={tolerance} is invalid: accuracy points in [0, 1).")
    elif strategy.preset is not None or strategy.tolerance is not None:
        what = (
            "strategy.target=energy_budget"
            if strategy.name is StrategyName.cascade
            else f"strategy={strategy.name.value}"
        )
        raise ConfigError(
            f"strategy.preset / strategy.tolerance apply to accuracy-parity cascades only, not to {what}."
        )
    if strategy.name is StrategyName.cascade and strategy.target is CascadeTarget.energy_budget:
        budget = strategy.energy_budget_j_per_1k
        if budget is None or budget <= 0:
            raise ConfigError(
                "strategy.target=energy_budget needs strategy.energy_budget_j_per_1k "
                "(a positive number of joules per 1,000 inferences)."
            )
    return [member_config(name) for name in pool.members]


def build_selection_workload(cfg: Config) -> Workload:
    from ecopipe.hardware import resolve_device

    members = _check(cfg)
    torch_members = any(m.framework is Framework.torch for m in members)
    device = resolve_device(cfg.hardware.device, cpu_only=not torch_members)
    return SelectionWorkload(
        cfg.strategy, cfg.pool, members, cfg.batch_size, cfg.seed, device, cfg.monitor.fake_gpu_watts
    )
