"""A selection study as a Workload: the job's strategy, and everything it is compared with, measured alike.

load() reads the pool's data (the test split once) and builds the members. fit() (metered as the fit
phase) trains them on train, temperature-scales them on validation A, prices each one per call and
per row on validation rows (`costs`), orders them by that price, picks the *reference* (the most
accurate member on validation B; ties: the cheaper), then fits every registered strategy
(`strategies/`) on the validation splits: a tuned one (cascade, router) for each preset's accuracy
tolerance against the reference (and the job's own goal if it is another one).

The stage measures the job's strategy in its trials and, as arms in the same trials (`arms`), every
member alone and every other strategy, over the same test split at the same batch size; `report`
turns those measurements into savings with their intervals, the Pareto figure and the summary. This
module holds only what every strategy shares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecopipe.config import (
    CascadeTarget,
    Config,
    ConfigError,
    Framework,
    ModelConfig,
    PoolConfig,
    Precision,
    StrategyConfig,
)
from ecopipe.results import Findings, ModelFacts
from ecopipe.selection import report, study
from ecopipe.selection.costs import MemberCost, Prices, batched, measure_member_cost
from ecopipe.selection.data import POOL_DATASETS, PoolData, load_pool_data
from ecopipe.selection.members import Member, build_member, member_config
from ecopipe.selection.runners import Answers, Runner, SelectionBatch, concatenate
from ecopipe.selection.strategies import registered, strategy_class
from ecopipe.selection.strategies.base import Goal, Policy, Strategy, Validation, View
from ecopipe.selection.strategies.member import MEMBER_PREFIX, MemberAlone
from ecopipe.workloads.base import ComparesArms, Workload

if TYPE_CHECKING:
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.results import InferenceResult

log = logging.getLogger(__name__)


def plan_name(strategy: StrategyConfig, tuned: bool) -> str:
    """The arm name of a job's strategy."""
    if not tuned:
        return strategy.name
    if strategy.target is CascadeTarget.energy_budget:
        return f"{strategy.name}_budget"
    if strategy.tolerance is not None:
        return f"{strategy.name}_custom"
    return f"{strategy.name}_{strategy.preset or 'balanced'}"


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


class SelectionWorkload(Workload, ComparesArms):
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
        self.reference = -1  # position of the reference member
        self.kind = strategy_class(strategy)
        self.strategies: dict[str, Strategy] = {}  # every registered strategy, fitted on validation
        self.goals: dict[str, tuple[type[Strategy], Goal]] = {}  # arm name -> its strategy and goal
        self.plans: dict[str, Policy] = {}  # arm name -> a strategy's policy for one goal
        self.headline = plan_name(strategy, self.kind.tuned)
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
        for cached in ("evaluation", "main"):
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
        validation = Validation(
            self.members, self.batch_size, prices, self.reference, x_a, view_a, x_b, self.validation_b,
            self.seed, lambda name, scores: self._with_meter(
                lambda meter: measure_member_cost(
                    name, meter, scores, pricing_rows, self.batch_size, self.pool.cost_window_s
                )
            ),
        )  # fmt: skip
        self.goals = self._goals()
        self.strategies = {kind.name: kind(validation) for kind, _ in self.goals.values()}
        for name, (kind, goal) in self.goals.items():
            self.plans[name] = self.strategies[kind.name].fit(goal, name)
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
        tuned = self.plans[self.headline].tuned
        if tuned is not None:
            for member, threshold in zip(self.members, tuned.thresholds, strict=True):
                if math.isfinite(threshold):
                    result[f"threshold.{member.name}"] = float(threshold)
            result["validation_b_accuracy"] = tuned.point.accuracy
            result["target_met_on_validation_b"] = float(tuned.feasible)
        tolerance = self.goals[self.headline][1].tolerance
        if tolerance is not None:
            result["tolerance"] = tolerance
        assert self.validation_b is not None
        result["reference_validation_b_accuracy"] = float(self.validation_b.correct[self.reference].mean())
        return result

    def facts(self) -> ModelFacts:
        runner = self.runner_for(self.headline)
        rows = max(runner.rows, 1)
        params = {m.name: m.parameters for m in self.members}
        policy = self.plans[self.headline]
        scorer_params = policy.overhead_parameters
        effective = sum(params[m.name] * runner.evaluated[i] / rows for i, m in enumerate(self.members))
        effective += scorer_params * runner.scorer_rows / rows
        extra: dict[str, Any] = {
            "strategy": self.headline,
            "pool": self.pool.name,
            "reference": self.members[self.reference].name,
            "order": [m.name for m in self.members],
            # Flat, so each lands in a tag: with quality.evaluated.<member> they give effective_parameters.
            **{f"parameters.{name}": count for name, count in params.items()},
        }
        # A strategy's own fitted scorer (the router's predictors) is part of the pool's size.
        scorers = {name: s.parameters for name, s in self.strategies.items() if s.parameters}
        extra |= {f"parameters.{name}": count for name, count in scorers.items()}
        if policy.tuned is not None:
            extra["thresholds"] = {
                m.name: float(t) for m, t in zip(self.members, policy.tuned.thresholds, strict=True)
            }
        dtypes = "+".join(sorted({m.dtype for m in self.members}))
        return ModelFacts(
            int(sum(params.values()) + sum(scorers.values())),
            float(effective),
            dtypes,
            "fitted",
            extra,
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
    def _goals(self) -> dict[str, tuple[type[Strategy], Goal]]:
        """Every arm a strategy plays: a tuned one at each preset's tolerance, each other once, and
        the job's own goal where it is another one."""
        budget, grid = self.strategy.energy_budget_j_per_1k, self.strategy.threshold_grid
        parity = CascadeTarget.accuracy_parity
        goals: dict[str, tuple[type[Strategy], Goal]] = {}
        for kind in registered():
            if kind.tuned:
                for preset, tolerance in StrategyConfig.PRESETS.items():
                    goals[f"{kind.name}_{preset}"] = (kind, Goal(parity, tolerance, budget, grid))
            else:
                goals[kind.name] = (kind, Goal(parity, None, budget, grid))
        if self.headline not in goals:
            own = self.strategy.target is parity and self.kind.tuned
            tolerance = self.strategy.resolved_tolerance() if own else None
            goals[self.headline] = (self.kind, Goal(self.strategy.target, tolerance, budget, grid))
        return goals

    def runner_for(self, name: str) -> Runner:
        if name not in self._runners:
            self._runners[name] = self.policy(name).runner(
                self.members, self.batch_size, lambda: self.evaluation
            )
        return self._runners[name]

    def policy(self, name: str) -> Policy:
        """An arm's policy: a member alone, or a strategy's for one goal."""
        if name.startswith(MEMBER_PREFIX):
            return MemberAlone([m.name for m in self.members].index(name.removeprefix(MEMBER_PREFIX)))
        return self.plans[name]

    # ----- prices ----------------------------------------------------------------------------
    def prices(self) -> Prices:
        """The members' prices per call and per row, in pool order."""
        return Prices.of([self.costs[m.name] for m in self.members], self.batch_size)

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

    def right_on_test(self, name: str) -> np.ndarray:
        """Per test row, whether the arm answers it right (from the members' outputs, no window)."""
        return self.policy(name).right(self.evaluation, self.x_test)

    def findings(self, result: InferenceResult, folder: Path) -> Findings:
        return report.findings(self, result, folder)


def _check(cfg: Config) -> list[ModelConfig]:
    """Everything about a selection job that can be refused before anything loads."""
    strategy, pool = cfg.strategy, cfg.pool
    if pool.name == "none" or not pool.members:
        raise ConfigError(
            f"strategy={strategy.name} needs a pool of models: add pool=digits_hard or pool=digits_5 "
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
    tunable = strategy_class(strategy).tuned
    if tunable and strategy.target is CascadeTarget.accuracy_parity:
        strategy.resolved_tolerance()  # refuses an unknown preset, or a preset and a tolerance together
    elif strategy.preset is not None or strategy.tolerance is not None:
        what = "strategy.target=energy_budget" if tunable else f"strategy={strategy.name}"
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
