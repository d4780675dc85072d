"""What each member costs as a strategy pays it, and the per-member accounting of a strategy's pass.

A strategy calls a member on batches of varying size, and the per-call overhead of scikit-learn and
PyTorch is often larger than the per-row work, so a member's cost is a call cost plus a row cost:
J(call on n rows) = per_call + n x per_row. Each member is measured alone on validation rows (never
test) at several batch sizes (`batch_sizes`), each in REPEATS short windows; the median joules per
call of each size are fitted by non-negative least squares on relative errors, so the fit can neither
go negative nor let one size dominate, and a burst from another process moves one median, not the
fit. The fit is checked afterwards against each member's measured windows on test (`study`).

Strategies queue the rows they pass on, so every member but the first runs full batches and one
partial batch per pass (`runners`); a pass over `rows` inputs that sends n rows to a member pays
ceil(n / batch) calls and n rows (`Prices.pass_j`): tuning, the Pareto curve and the oracle bound are
priced that way, the way the strategy pays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from ecopipe.monitor.energy import EnergyMeter
from ecopipe.stages.inference import SHORTEST_WINDOW_REFRESHES

REPEATS = 3  # windows per batch size; their median is fitted
SIZE_STEP = 4  # batch sizes measured: batch, batch/4, batch/16, ... down to 1


@dataclass(frozen=True)
class MemberCost:
    name: str
    joules_per_call: float
    joules_per_row: float
    observations: tuple[tuple[int, float], ...] = ()  # (batch size, median joules per call) fitted

    def per_sample(self, batch_size: int) -> float:
        """Joules per input at full batches of `batch_size`."""
        return self.joules_per_call / batch_size + self.joules_per_row

    def charge(self, calls: int, rows: int) -> float:
        return self.joules_per_call * calls + self.joules_per_row * rows


def batched(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Contiguous batches of at most `batch_size` rows (as the single-model workloads batch)."""
    return np.array_split(x, max(1, -(-len(x) // batch_size)))


def batch_sizes(batch_size: int) -> list[int]:
    """The job's batch size and its SIZE_STEP-fold reductions down to 1, ascending."""
    sizes = {batch_size}
    while batch_size > 1:
        batch_size = max(1, batch_size // SIZE_STEP)
        sizes.add(batch_size)
    return sorted(sizes)


def fit_affine(sizes: np.ndarray, joules_per_call: np.ndarray) -> tuple[float, float]:
    """(per_call, per_row) >= 0 minimising the relative squared error of per_call + size x per_row.

    With one size the two cannot be told apart: everything is charged per row.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    observed = np.asarray(joules_per_call, dtype=np.float64)
    if len(np.unique(sizes)) < 2:
        return 0.0, float(np.mean(observed / sizes))
    scale = 1.0 / np.where(observed > 0, observed, np.inf)  # a zero reading carries no weight
    design = np.stack([np.ones_like(sizes), sizes], axis=1) * scale[:, None]
    (per_call, per_row), _ = nnls(design, observed * scale)
    return float(per_call), float(per_row)


def _joules_per_call(
    meter: EnergyMeter, run: Callable[[np.ndarray], object], batches: list[np.ndarray], window_s: float
) -> float:
    """Calls cycling over `batches` until the window lasts `window_s` (one call at least)."""
    started = time.perf_counter()
    start = meter.snapshot()
    calls = 0
    while True:
        run(batches[calls % len(batches)])
        calls += 1
        if time.perf_counter() - started >= window_s:
            break
    return meter.since(start).energy.total / calls


def measure_member_cost(
    name: str,
    meter: EnergyMeter,
    run: Callable[[np.ndarray], object],
    x: np.ndarray,
    batch_size: int,
    window_s: float,
) -> MemberCost:
    """Fit per-call and per-row joules from windows at every size of `batch_sizes` (`window_s` in all,
    or more where the sensors' refresh needs longer windows)."""
    sizes = batch_sizes(batch_size)
    # Each window spans enough sensor refreshes not to be quantisation (the stage's own rule).
    coarsest = max(meter.resolution_s.values(), default=0.0)
    sub_window = max(window_s / (len(sizes) * REPEATS), SHORTEST_WINDOW_REFRESHES * coarsest)
    observations = []
    for size in sizes:
        batches = [b for b in batched(x, size) if len(b) == size] or [x[:size]]
        run(batches[0])  # warm-up: first-call allocations are not the steady state being charged
        median = float(np.median([_joules_per_call(meter, run, batches, sub_window) for _ in range(REPEATS)]))
        observations.append((size, median))
    per_call, per_row = fit_affine(*np.array(observations).T)
    return MemberCost(name, per_call, per_row, tuple(observations))


@dataclass(frozen=True)
class Prices:
    """Per-call and per-row joules of each member in pool order (plus the router's, where one runs),
    and the batch size strategies queue to: the price of a pass as the strategy pays it."""

    per_call: np.ndarray
    per_row: np.ndarray
    batch_size: int
    router: MemberCost | None = None

    @classmethod
    def of(cls, costs: list[MemberCost], batch_size: int, router: MemberCost | None = None) -> Prices:
        return cls(
            np.array([c.joules_per_call for c in costs]),
            np.array([c.joules_per_row for c in costs]),
            batch_size,
            router,
        )

    @property
    def per_sample(self) -> np.ndarray:
        """Each member alone, at full batches: what orders the pool and prices the oracle."""
        return self.per_call / self.batch_size + self.per_row

    def pass_j(self, evaluated: np.ndarray, rows: int) -> float:
        """Joules per input of a pass over `rows` inputs that ran member m on evaluated[m] of them."""
        calls = np.ceil(np.asarray(evaluated) / self.batch_size)
        total = float(calls @ self.per_call + np.asarray(evaluated) @ self.per_row)
        if self.router is not None:
            total += self.router.charge(math.ceil(rows / self.batch_size), rows)
        return total / rows


@dataclass(frozen=True)
class Accounting:
    """Fitted cost per call and per row x the calls and inputs each member (and the router) really
    ran in one pass: what the strategy *should* cost, beside what its window measured."""

    rows: int  # inputs the strategy answered
    evaluated: Mapping[str, int]  # member or "router" -> inputs it ran on
    calls: Mapping[str, int]  # member or "router" -> calls it made
    costs: Mapping[str, MemberCost]

    @property
    def charged_j(self) -> dict[str, float]:
        return {
            name: self.costs[name].charge(self.calls[name], rows) for name, rows in self.evaluated.items()
        }

    @property
    def per_sample_j(self) -> float:
        return float(sum(self.charged_j.values())) / self.rows if self.rows else float("nan")

    @property
    def per_1k_j(self) -> float:
        return 1000 * self.per_sample_j
