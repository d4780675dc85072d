"""What a selection strategy is: fitted on validation, frozen into a policy, run on test.

A `Strategy` is fitted once on what `Validation` holds (no test row): the pool's members cheapest
first, their prices, the reference member and every member's outputs on validation A and B. For each
`Goal` (an accuracy tolerance against the reference, or an energy budget) it returns a `Policy`: a
frozen rule that runs the test split through a `Runner`, which charges every member (and any scorer
of its own, such as the router) each input ran through.

Subclasses register themselves by their `name`; `strategies.strategy_class` finds one by that name
(the modules of this package) or by its class path (`strategy._target_`, a module of the user's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ecopipe.config import CascadeTarget
from ecopipe.selection.costs import MemberCost, Prices
from ecopipe.selection.members import Member
from ecopipe.selection.runners import Runner
from ecopipe.selection.thresholds import Tuned

REGISTRY: dict[str, type[Strategy]] = {}


@dataclass(frozen=True)
class View:
    """Every member's calibrated confidence and correctness on one split: (members x rows) matrices."""

    conf: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class Goal:
    """What a tuned strategy is tuned for on validation B."""

    target: CascadeTarget
    tolerance: float | None  # accuracy points below the reference (accuracy_parity)
    budget_j_per_1k: float | None  # energy_budget: joules per 1,000 inferences
    grid: int  # thresholds tried per member


@dataclass(frozen=True)
class Validation:
    """What a strategy may fit on: never a test row."""

    members: Sequence[Member]  # cheapest first
    batch_size: int
    prices: Prices  # the members', at `batch_size`
    reference: int  # position of the most accurate member on validation B
    x_a: np.ndarray
    view_a: View
    x_b: np.ndarray
    view_b: View
    seed: int
    # Meters a scorer of the strategy's own (name, scores(x)) on validation rows, as a member is priced.
    price: Callable[[str, Callable[[np.ndarray], np.ndarray]], MemberCost]


class Policy(ABC):
    """A strategy fitted for one goal and frozen: it runs the test split, charging all it ran."""

    tuned: Tuned | None = None  # thresholds and their validation-B outcome, for a tuned policy
    overhead: MemberCost | None = None  # a scorer run on every input besides the members (router)
    overhead_parameters: int = 0

    @abstractmethod
    def runner(self, members: Sequence[Member], batch_size: int, test: Callable[[], View]) -> Runner:
        """A runner of the test split. `test()`: every member's outputs on it, for hindsight only."""

    @abstractmethod
    def right(self, test: View, x_test: np.ndarray) -> np.ndarray:
        """Per test row, whether the policy answers it right (from the members' outputs, no window)."""


class Strategy(ABC):
    """A way to pick pool members per input; one instance per study, fitted on `validation`."""

    name: ClassVar[str]  # the `strategy.name` that selects it, and the start of its arm names
    tuned: ClassVar[bool] = False  # tuned for a goal: presets, tolerance and target apply
    rank: ClassVar[int] = 50  # where its arms come in the study's reports (lower first)
    parameters: int = 0  # of a scorer of its own, fitted on validation (part of the pool's size)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    def __init__(self, validation: Validation) -> None:
        self.validation = validation

    @abstractmethod
    def fit(self, goal: Goal, arm: str) -> Policy:
        """The policy for `goal` (a strategy that is not tuned ignores it); `arm` names it in logs."""
