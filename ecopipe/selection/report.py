"""A selection study as a Workload: the job's strategy, and everything it is compared with, measured alike.

load() reads the pool's data (the test split once) and builds the members. fit() (metered as the fit
phase) trains them on train, temperature-scales them on validation A, prices each one per call and
per row on validation rows (`costs`), orders them by that price, picks the *reference* (the most
accurate member on validation B; ties: the cheaper), fits the router's correctness predictors on
validation A, and tunes every strategy on validation B: a cascade and a router for each preset's
accuracy tolerance against the reference (and the job's own target if it is another one).

The stage measures the job's strategy in its trials and, as arms in the same trials (`arms`), every
member alone and every other strategy, over the same test split at the same batch size: savings are
then a ratio of two measured energies, with a 95% interval (`study`). The per-member accounting
(fitted costs x the calls and rows each pass really ran) is reported beside each measurement as a
cross-check, flagged beyond ACCOUNTING_TOLERANCE.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
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
from ecopipe.monitor.stats import estimate
from ecopipe.selection import study
from ecopipe.selection.cascade import Tuned, evaluate, shared_grid, stop_index, terminal_at, tune
from ecopipe.selection.costs import MemberCost, Prices, batched, measure_member_cost
from ecopipe.selection.data import POOL_DATASETS, PoolData, load_pool_data
from ecopipe.selection.members import Member, build_member, member_config
from ecopipe.selection.oracle import cheapest_right, oracle_frontier
from ecopipe.selection.pareto import MeasuredPoint, area_under, cascade_curve, curve_csv, plot_study
from ecopipe.selection.router import Router
from ecopipe.selection.runners import (
    Answers,
    CascadeRunner,
    MemberRunner,
    OracleRunner,
    RouterRunner,
    Runner,
    SelectionBatch,
    concatenate,
)
from ecopipe.workloads.base import Findings, ModelFacts, Workload

if TYPE_CHECKING:
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.stages.inference import InferenceResult

log = logging.getLogger(__name__)

# The accounting is fitted on other rows in other, shorter windows: it is a cross-check, and is
# flagged when it misses the measured window by more than this share of it.
ACCOUNTING_TOLERANCE = 0.25
PARITY_GOAL_PP = 0.5  # the summary names the cheapest arm within this loss of the reference on test
MEMBER_PREFIX = "member_"


@dataclass(frozen=True)
class View:
    """Every member's calibrated confidence and correctness on one split: (members x rows) matrices."""

    conf: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class Plan:
    """One strategy of the study, tuned on validation B (the oracle is not tuned: it is hindsight)."""

    name: str  # its arm name: cascade_balanced, router_energy_saver, cascade_budget, oracle...
    kind: StrategyName
    target: CascadeTarget
    tolerance: float | None  # accuracy points below the reference on validation B (parity)
    tuned: Tuned | None = None


def plan_name(strategy: StrategyConfig) -> str:
    """The arm name of a job's strategy."""
    kind = strategy.name.value
    if strategy.name is StrategyName.oracle:
        return kind
    if strategy.target is CascadeTarget.energy_budget:
        return f"{kind}_budget"
    if strategy.tolerance is not None:
        return f"{kind}_custom"
    return f"{kind}_{strategy.preset or 'balanced'}"


class ArmWorkload(Workload):
    """A member alone or another strategy, run over the study's test batches inside the stage's trials."""

    def __init__(self, runner: Runner, batches: Sequence[SelectionBatch], truth: np.ndarray) -> None:
        self.runner, self._batches, self.truth = runner, batches, truth

    def load(self) -> None:  # loaded and fitted with the study
        pass

    def batches(self) -> Sequence[SelectionBatch]:
        return self._batches

    def predict(self, batch: SelectionBatch) -> Answers:
        if batch is self._batches[0]:
            self.runner.start()
        return self.runner.feed(batch, last=batch is self._batches[-1])

    def quality(self, outputs: Sequence[Answers]) -> dict[str, float]:
        answers = concatenate(outputs)
        return {"accuracy": float((answers.labels == self.truth[answers.rows]).mean())}

    def facts(self) -> ModelFacts:
        raise NotImplementedError("an arm is reported through its study")


class SelectionWorkload(Workload):
    def __init__(
        self,
        strategy: StrategyConfig,
        pool: PoolConfig,
        members: Sequence[ModelConfig],
        batch_size: int,
        seed: int,
        device: str = "cpu",
    ) -> None:
        self.strategy, self.pool = strategy, pool
        self.member_cfgs = list(members)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.meter: EnergyMeter | None = None
        self.data: PoolData | None = None
        self.members: list[Member] = []  # ordered by fitted price per input after fit()
        self.costs: dict[str, MemberCost] = {}
        self.router_cost: MemberCost | None = None
        self.reference = -1  # position of the reference member
        self.router: Router | None = None
        self.plans: dict[str, Plan] = {}
        self.headline = plan_name(strategy)
        self.validation_b: View | None = None
        self._runners: dict[str, Runner] = {}
        self._batches: list[SelectionBatch] = []
        self.truth = np.empty(0, dtype=np.int64)
        self.x_test = np.empty((0, 0), dtype=np.float32)

    @cached_property
    def main(self) -> ArmWorkload:
        """The job's own strategy, as the stage's trials run it."""
        return ArmWorkload(self.runner_for(self.headline), self._batches, self.truth)

    # ----- the Workload contract -------------------------------------------------------------
    def attach_meter(self, meter: EnergyMeter) -> None:
        """Members are priced on the same sensors as the stage's windows."""
        self.meter = meter

    def load(self) -> None:
        self.data = load_pool_data(self.pool, self.seed)
        self.members = [
            build_member(cfg, self.data.classes, self.seed, self.data.image_shape, self.device)
            for cfg in self.member_cfgs
        ]
        self.x_test, self.truth = self.data.part("test")  # the only read of the test split
        rows = np.arange(len(self.truth))
        self._batches = [
            SelectionBatch(x, r)
            for x, r in zip(
                batched(self.x_test, self.batch_size), batched(rows, self.batch_size), strict=True
            )
        ]
        for cached in ("evaluation", "oracle_choice", "main"):
            self.__dict__.pop(cached, None)
        self._runners = {}

    def fit(self) -> bool:
        assert self.data is not None
        x_train, y_train = self.data.part("train")
        x_a, y_a = self.data.part("validation_a")
        x_b, y_b = self.data.part("validation_b")
        for member in self.members:
            member.fit(x_train, y_train)
            member.calibrate(x_a, y_a)
            log.info("pool member %s fitted; temperature %.3g", member.name, member.temperature)
        pricing_rows = np.concatenate([x_a, x_b])
        self._price_members(pricing_rows)
        self.members.sort(key=lambda m: self.costs[m.name].per_sample(self.batch_size))  # stable on ties
        prices = self.prices()
        log.info(
            "pool ordered by price per input at batch %d: %s",
            self.batch_size,
            ", ".join(
                f"{m.name} {c * 1e3:.3g} mJ" for m, c in zip(self.members, prices.per_sample, strict=True)
            ),
        )
        view_a = self._view(x_a, y_a)
        self.validation_b = self._view(x_b, y_b)
        accuracy_b = self.validation_b.correct.mean(axis=1)
        self.reference = study.pick(accuracy_b.tolist(), prices.per_sample.tolist())
        log.info(
            "reference: %s, the most accurate member on validation B (%.4f)",
            self.members[self.reference].name,
            accuracy_b[self.reference],
        )
        self.router = Router(self.seed)
        self.router.fit(x_a, view_a.correct)
        router = self.router
        self.router_cost = self._with_meter(
            lambda meter: measure_member_cost(
                "router", meter, router.scores, pricing_rows, self.batch_size, self.pool.cost_window_s
            )
        )
        router_scores_b = router.scores(x_b)
        for plan in self._plans():
            if plan.kind is StrategyName.oracle:
                self.plans[plan.name] = plan
                continue
            scores = self.validation_b.conf if plan.kind is StrategyName.cascade else router_scores_b
            self.plans[plan.name] = self._tune(plan, scores)
        return True

    def batches(self) -> Sequence[SelectionBatch]:
        return self._batches

    def predict(self, batch: SelectionBatch) -> Answers:
        return self.main.predict(batch)

    def quality(self, outputs: Sequence[Answers]) -> dict[str, float]:
        """The job's strategy on test: `accuracy`, `share.<member>` (inputs it answered),
        `evaluated.<member>` (inputs it ran on), thresholds, tolerance, its validation-B results."""
        answers = concatenate(outputs)
        runner = self.runner_for(self.headline)
        shares = np.bincount(answers.chosen, minlength=len(self.members)) / len(answers.rows)
        result = self.main.quality(outputs)
        for position, member in enumerate(self.members):
            result[f"share.{member.name}"] = float(shares[position])
            result[f"evaluated.{member.name}"] = float(runner.evaluated[position] / max(runner.rows, 1))
        plan = self.plans[self.headline]
        if plan.tuned is not None:
            for member, threshold in zip(self.members, plan.tuned.thresholds, strict=True):
                if math.isfinite(threshold):
                    result[f"threshold.{member.name}"] = float(threshold)
            result["validation_b_accuracy"] = plan.tuned.point.accuracy
            result["target_met_on_validation_b"] = float(plan.tuned.feasible)
        if plan.tolerance is not None:
            result["tolerance"] = plan.tolerance
        assert self.validation_b is not None
        result["reference_validation_b_accuracy"] = float(self.validation_b.correct[self.reference].mean())
        return result

    def facts(self) -> ModelFacts:
        runner = self.runner_for(self.headline)
        rows = max(runner.rows, 1)
        params = {m.name: m.parameters for m in self.members}
        router_params = self.router.parameters if self.router is not None else 0
        effective = sum(params[m.name] * runner.evaluated[i] / rows for i, m in enumerate(self.members))
        effective += router_params * runner.router_rows / rows
        extra: dict[str, Any] = {
            "strategy": self.headline,
            "pool": self.pool.name,
            "reference": self.members[self.reference].name,
            "order": [m.name for m in self.members],
            # Flat, so each lands in a tag: with quality.evaluated.<member> they give effective_parameters.
            **{f"parameters.{name}": count for name, count in params.items()},
        }
        if self.router is not None:
            extra["parameters.router"] = router_params
        plan = self.plans[self.headline]
        if plan.tuned is not None:
            extra["thresholds"] = {
                m.name: float(t) for m, t in zip(self.members, plan.tuned.thresholds, strict=True)
            }
        dtypes = "+".join(sorted({m.dtype for m in self.members}))
        return ModelFacts(
            int(sum(params.values()) + router_params), float(effective), dtypes, "fitted", extra
        )

    def arms(self) -> dict[str, Workload]:
        """Every member alone and every other strategy, over the same test batches."""
        names = [f"{MEMBER_PREFIX}{m.name}" for m in self.members] + [
            n for n in self.plans if n != self.headline
        ]
        return {name: ArmWorkload(self.runner_for(name), self._batches, self.truth) for name in names}

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    # ----- strategies ------------------------------------------------------------------------
    def _plans(self) -> list[Plan]:
        plans = [
            Plan(f"{kind.value}_{preset}", kind, CascadeTarget.accuracy_parity, tolerance)
            for kind in (StrategyName.cascade, StrategyName.router)
            for preset, tolerance in StrategyConfig.PRESETS.items()
        ]
        plans.append(Plan("oracle", StrategyName.oracle, CascadeTarget.accuracy_parity, None))
        if self.headline not in {p.name for p in plans}:
            parity = self.strategy.target is CascadeTarget.accuracy_parity
            tolerance = self.strategy.resolved_tolerance() if parity else None
            plans.append(Plan(self.headline, self.strategy.name, self.strategy.target, tolerance))
        return plans

    def _tune(self, plan: Plan, scores: np.ndarray) -> Plan:
        assert self.validation_b is not None
        budget = self.strategy.energy_budget_j_per_1k
        reference_accuracy = float(self.validation_b.correct[self.reference].mean())
        tuned = tune(
            scores,
            self.validation_b.correct,
            self.prices(router=plan.kind is StrategyName.router),
            plan.target,
            plan.tolerance or 0.0,
            None if budget is None else budget / 1000,
            self.strategy.threshold_grid,
            charge_reached=plan.kind is StrategyName.cascade,
            reference=self.reference,
        )
        if not tuned.feasible:
            log.warning(
                "%s: target %s cannot be met on validation B (budget %s J per 1,000 below the cheapest "
                "member's?): the closest thresholds are used",
                plan.name,
                plan.target.value,
                budget,
            )
        log.info(
            "%s thresholds %s: validation B accuracy %.4f (reference %.4f), %.4g J per 1,000 priced",
            plan.name,
            np.round(tuned.thresholds, 4).tolist(),
            tuned.point.accuracy,
            reference_accuracy,
            1000 * tuned.point.energy_j_per_sample,
        )
        return Plan(plan.name, plan.kind, plan.target, plan.tolerance, tuned)

    def runner_for(self, name: str) -> Runner:
        if name not in self._runners:
            self._runners[name] = self._build_runner(name)
        return self._runners[name]

    def _build_runner(self, name: str) -> Runner:
        if name.startswith(MEMBER_PREFIX):
            position = [m.name for m in self.members].index(name.removeprefix(MEMBER_PREFIX))
            return MemberRunner(self.members, self.batch_size, position)
        plan = self.plans[name]
        if plan.kind is StrategyName.oracle:
            # Hindsight by definition: the oracle alone reads the test labels; a bound, not a method.
            return OracleRunner(self.members, self.batch_size, self.oracle_choice)
        assert plan.tuned is not None
        if plan.kind is StrategyName.router:
            assert self.router is not None
            return RouterRunner(self.members, self.batch_size, self.router, plan.tuned.thresholds)
        return CascadeRunner(self.members, self.batch_size, plan.tuned.thresholds)

    # ----- prices ----------------------------------------------------------------------------
    def prices(self, router: bool = False) -> Prices:
        costs = [self.costs[m.name] for m in self.members] if self.members else []
        return Prices.of(costs, self.batch_size, self.router_cost if router else None)

    def _with_meter(self, action: Any) -> Any:
        if self.meter is None:
            raise RuntimeError(
                "a selection workload prices its members with the stage's meter: attach_meter first"
            )
        return action(self.meter)

    def _price_members(self, x: np.ndarray) -> None:
        def measure(meter: EnergyMeter) -> None:
            for member in self.members:
                self.costs[member.name] = measure_member_cost(
                    member.name, meter, member.proba, x, self.batch_size, self.pool.cost_window_s
                )
                cost = self.costs[member.name]
                log.info(
                    "%s priced %.3g mJ per call + %.3g mJ per row (fitted on %s)",
                    member.name,
                    cost.joules_per_call * 1e3,
                    cost.joules_per_row * 1e3,
                    ", ".join(f"batch {n}: {j * 1e3:.3g} mJ/call" for n, j in cost.observations),
                )

        self._with_meter(measure)

    # ----- the test split, after the trials --------------------------------------------------
    def _view(self, x: np.ndarray, y: np.ndarray) -> View:
        probas = [np.concatenate([m.proba(b) for b in batched(x, self.batch_size)]) for m in self.members]
        return View(
            np.stack([p.max(axis=1) for p in probas]), np.stack([p.argmax(axis=1) == y for p in probas])
        )

    @cached_property
    def evaluation(self) -> View:
        """Every member on the test split, outside the measured windows: the oracle's hindsight and
        the report's per-row correctness, frontier and curve."""
        return self._view(self.x_test, self.truth)

    @cached_property
    def oracle_choice(self) -> np.ndarray:
        return cheapest_right(self.evaluation.correct, self.prices().per_sample)

    def right_on_test(self, name: str) -> np.ndarray:
        """Per test row, whether the arm answers it right (from the members' outputs, no window)."""
        view, rows = self.evaluation, np.arange(len(self.truth))
        if name.startswith(MEMBER_PREFIX):
            return view.correct[self._runners_position(name)]
        plan = self.plans[name]
        if plan.kind is StrategyName.oracle:
            return view.correct[self.oracle_choice, rows]
        assert plan.tuned is not None and self.router is not None
        scores = view.conf if plan.kind is StrategyName.cascade else self.router.scores(self.x_test)
        return view.correct[stop_index(scores, plan.tuned.thresholds), rows]

    def _runners_position(self, name: str) -> int:
        return [m.name for m in self.members].index(name.removeprefix(MEMBER_PREFIX))

    # ----- findings --------------------------------------------------------------------------
    def findings(self, result: InferenceResult, folder: Path) -> Findings:
        measured = {name: arm.per_1k_samples() for name, arm in result.arms.items()}
        measured[self.headline] = result.per_1k_samples(Attribution.gross)
        bands = {name: arm.per_1k_band() for name, arm in result.arms.items()}
        bands[self.headline] = result.per_1k_bands(Attribution.gross)["total"]
        seconds = {name: arm.seconds_per_1k_samples() for name, arm in result.arms.items()}
        seconds[self.headline] = estimate([t.window.duration_s * 1000 / t.samples for t in result.trials])
        accuracy = {name: arm.quality["accuracy"] for name, arm in result.arms.items()}
        accuracy[self.headline] = result.quality["accuracy"]
        reference = f"{MEMBER_PREFIX}{self.members[self.reference].name}"
        costliest = f"{MEMBER_PREFIX}{self.members[-1].name}"
        reference_right = self.right_on_test(reference)
        metrics: dict[str, float] = {}
        rows = []
        for name in measured:
            vs_reference = study.savings(measured[name], measured[reference])
            vs_costliest = study.savings(measured[name], measured[costliest])
            delta = study.accuracy_difference(self.right_on_test(name), reference_right)
            row: dict[str, Any] = {
                "arm": name,
                "accuracy": accuracy[name],
                "energy_per_1k_j": measured[name].mean,
                "energy_per_1k_ci95_j": measured[name].ci95,
                "energy_per_1k_j_low": bands[name].low,  # the band: coefficients' range and the CI
                "energy_per_1k_j_high": bands[name].high,
                "accuracy_delta_vs_reference": delta,
                "savings_measured_vs_reference": vs_reference,
                "savings_measured_vs_costliest": vs_costliest,
                "time_savings_vs_reference": study.savings(seconds[name], seconds[reference]),
            }
            row |= self._cross_check(name, measured[name].mean)
            rows.append(row)
        accounted_reference = next(r for r in rows if r["arm"] == reference)["energy_per_1k_accounted_j"]
        for row in rows:
            # The accounting's savings, named apart from the measured ones: prices x calls and rows.
            row["savings_accounted_vs_reference"] = 1 - row["energy_per_1k_accounted_j"] / accounted_reference
            metrics |= _row_metrics(row)
        # The job's own strategy also under the bare names, for tables across jobs.
        own = f"selection.{self.headline}."
        metrics |= {f"selection.{k.removeprefix(own)}": v for k, v in metrics.items() if k.startswith(own)}
        curve, frontier, areas = self._curves()
        metrics |= {
            "selection.reference_accuracy": accuracy[reference],
            "selection.reference_energy_per_1k_j": measured[reference].mean,
            "selection.pareto_auc": areas[0],
            "selection.oracle_pareto_auc": areas[1],
            "selection.energy_estimated": float(result.is_estimate),
        }
        summary = self._summary(result, rows, reference, costliest)
        files = self._write_files(folder, rows, curve, frontier, areas, reference, result)
        return Findings(metrics, tuple(summary), tuple(files))

    def _cross_check(self, name: str, measured_per_1k: float) -> dict[str, float]:
        """The accounting (fitted costs x what the last pass ran) against the measured window."""
        runner = self.runner_for(name)
        router = self.router_cost if isinstance(runner, RouterRunner) else None
        accounted = runner.accounting(self.costs, router).per_1k_j
        gap = accounted / measured_per_1k - 1 if measured_per_1k else math.nan
        if abs(gap) > ACCOUNTING_TOLERANCE:
            log.warning(
                "%s: the per-member accounting says %.4g J per 1,000, its measured windows %.4g (%+.0f%%, "
                "beyond the %.0f%% tolerance): the fitted costs (validation rows, short windows) do not "
                "describe this pass; the windows are the measurement.",
                name,
                accounted,
                measured_per_1k,
                100 * gap,
                100 * ACCOUNTING_TOLERANCE,
            )
        return {
            "energy_per_1k_accounted_j": accounted,
            "accounting_gap_rel": gap,
            "accounting_within_tolerance": float(abs(gap) <= ACCOUNTING_TOLERANCE),
        }

    def _curves(self) -> tuple[list, tuple[np.ndarray, np.ndarray], tuple[float, float]]:
        assert self.validation_b is not None
        view, prices = self.evaluation, self.prices()
        grid = shared_grid(self.validation_b.conf[: self.reference], self.strategy.threshold_grid)
        curve = cascade_curve(view.conf, view.correct, prices, grid, self.reference)
        reference_j = evaluate(
            terminal_at(len(self.members), self.reference), view.conf, view.correct, prices
        )
        frontier = oracle_frontier(view.correct, prices.per_sample)
        energy_max = reference_j.energy_j_per_sample
        areas = (
            area_under([p.accuracy for p in curve], [p.energy_j_per_sample for p in curve], energy_max),
            area_under(frontier[0], frontier[1], energy_max),
        )
        return curve, frontier, areas

    def _summary(
        self, result: InferenceResult, rows: list[dict[str, Any]], reference: str, costliest: str
    ) -> list[str]:
        by_name = {r["arm"]: r for r in rows}
        ref = by_name[reference]
        assert self.validation_b is not None
        lines = [
            f"  reference   {reference.removeprefix(MEMBER_PREFIX)}: the most accurate member on "
            f"validation B ({self.validation_b.correct[self.reference].mean():.4f}); on test accuracy "
            f"{ref['accuracy']:.4f}, "
            f"{ref['energy_per_1k_j']:.4g} J per 1,000 ({ref['energy_per_1k_j_low']:.3g}–"
            f"{ref['energy_per_1k_j_high']:.3g}, {result.figures_label}, gross)"
        ]

        def describe(row: dict[str, Any]) -> str:
            delta = row["accuracy_delta_vs_reference"]
            return (
                f"accuracy {row['accuracy']:.4f} ({100 * delta.value:+.2f} pp [{100 * delta.low:+.2f}, "
                f"{100 * delta.high:+.2f}] vs reference), {row['energy_per_1k_j']:.4g} J per 1,000; "
                f"savings vs reference {row['savings_measured_vs_reference'].percent()}, vs costliest "
                f"({costliest.removeprefix(MEMBER_PREFIX)}) {row['savings_measured_vs_costliest'].percent()}"
            )

        lines.append(f"  {self.headline} (this job): {describe(by_name[self.headline])}")
        strategies = [r for r in rows if not r["arm"].startswith(MEMBER_PREFIX) and r["arm"] != "oracle"]
        parity = [r for r in strategies if r["accuracy_delta_vs_reference"].value >= -PARITY_GOAL_PP / 100]
        if parity:
            best = max(parity, key=lambda r: r["savings_measured_vs_reference"].value)
            lines.append(f"  best within {PARITY_GOAL_PP} pp on test: {best['arm']}: {describe(best)}")
        else:
            lines.append(f"  no strategy stays within {PARITY_GOAL_PP} pp of the reference on test")
        estimated = [c for c, m in result.measured.items() if not m and result.sources.get(c) != "none"]
        if result.is_estimate:
            time_row = by_name[self.headline]["time_savings_vs_reference"]
            lines.append(
                f"  energy is ESTIMATED ({', '.join(estimated)}: no counter), so these savings are time "
                f"savings: {self.headline} saves {time_row.percent()} of the reference's time per input"
            )
        return lines

    def _write_files(
        self,
        folder: Path,
        rows: list[dict[str, Any]],
        curve: list,
        frontier: tuple[np.ndarray, np.ndarray],
        areas: tuple[float, float],
        reference: str,
        result: InferenceResult,
    ) -> list[Path]:
        out = folder / "selection"
        out.mkdir(parents=True, exist_ok=True)
        points = {
            r["arm"]: MeasuredPoint(
                r["energy_per_1k_j"],
                r["energy_per_1k_j_low"],
                r["energy_per_1k_j_high"],
                r["accuracy"],
                r["arm"].startswith(MEMBER_PREFIX),
            )
            for r in rows
        }
        from ecopipe.stages.inference import ESTIMATE, MEASURED, WHOLE_GPU  # at call: stage imports workloads

        label = result.figures_label
        title = (
            f"pool {self.pool.name}: {len(self.truth)} test rows, batch {self.batch_size}; "
            f"area: cascade curve {areas[0]:.3f}, oracle {areas[1]:.3f}"
        )
        note = {
            MEASURED: "energy measured by counters",
            ESTIMATE: "energy ESTIMATED (no counter): it follows the CPU time and memory of each arm",
        }.get(label.removesuffix(WHOLE_GPU), f"energy {label}: from a simulated sensor")
        if label.endswith(WHOLE_GPU):
            note += "; the GPU's is the WHOLE GPU's (MIG): every instance's work, not the arms' own"
        png = plot_study(out / "pareto.png", frontier, curve, points, reference, title, note, label)
        csv = out / "pareto.csv"
        csv.write_text(curve_csv(curve))
        table = [
            {k: (v.__dict__ if isinstance(v, study.Interval) else v) for k, v in row.items()} for row in rows
        ]
        summary = {
            "strategy": self.headline,
            "reference": reference,
            "order": [m.name for m in self.members],
            "costs": {
                n: {"per_call_j": c.joules_per_call, "per_row_j": c.joules_per_row}
                for n, c in self.costs.items()
            },
            "arms": table,
            "pareto_auc": areas[0],
            "oracle_pareto_auc": areas[1],
        }
        summary_path = out / "selection.json"
        summary_path.write_text(json.dumps(summary, indent=2, default=float))
        return [csv, png, summary_path]


def _row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """One arm's row as `selection.<arm>.<key>` metrics; an interval gives its value and bounds."""
    metrics: dict[str, float] = {}
    for key, value in row.items():
        name = f"selection.{row['arm']}.{key}"
        if isinstance(value, study.Interval):
            metrics |= value.as_metrics(name)
        elif key != "arm":
            metrics[name] = value
    return metrics


def _check(cfg: Config) -> list[ModelConfig]:
    """Everything about a selection job that can be refused before anything loads."""
    strategy, pool = cfg.strategy, cfg.pool
    if pool.name == "none" or not pool.members:
        raise ConfigError(
            f"strategy={strategy.name.value} needs a pool of models: add pool=digits_hard or pool=digits_5 "
            "(offline) or pool=fashion_mnist_5."
        )
    if pool.dataset not in POOL_DATASETS:
        raise ConfigError(f"pool.dataset={pool.dataset} is unknown; allowed: {', '.join(POOL_DATASETS)}.")
    if len(pool.members) < 2:
        raise ConfigError(f"pool={pool.name} has {len(pool.members)} member; a selection needs at least 2.")
    if len(set(pool.members)) != len(pool.members):
        raise ConfigError(f"pool={pool.name} lists a member twice: {pool.members}.")
    if cfg.precision.name is not Precision.fp32:
        raise ConfigError(
            f"precision={cfg.precision.name.value} is not supported for a pool; use precision=fp32."
        )
    keys = ("validation_a_fraction", "validation_b_fraction", "test_fraction")
    fractions = {k: getattr(pool, k) for k in keys}  # each in (0, 1): the schema's ranges (config.py)
    if sum(fractions.values()) >= 0.9:
        raise ConfigError(f"pool fractions {fractions} leave under 10% of the rows to train the members.")
    tunable = strategy.name in (StrategyName.cascade, StrategyName.router)
    if tunable and strategy.target is CascadeTarget.accuracy_parity:
        strategy.resolved_tolerance()  # refuses an unknown preset, or a preset and a tolerance together
    elif strategy.preset is not None or strategy.tolerance is not None:
        what = "strategy.target=energy_budget" if tunable else f"strategy={strategy.name.value}"
        raise ConfigError(
            f"strategy.preset / strategy.tolerance apply to accuracy-parity cascades and routers only, "
            f"not to {what}."
        )
    budgeted = tunable and strategy.target is CascadeTarget.energy_budget
    if budgeted and strategy.energy_budget_j_per_1k is None:
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
    return SelectionWorkload(cfg.strategy, cfg.pool, members, cfg.batch_size, cfg.seed, device)
