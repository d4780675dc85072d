"""What each member costs, measured; and the per-member accounting of a strategy's run.

A member's cost is measured with the job's EnergyMeter over a short window of repeated passes on
validation rows at the job's batch size: joules per sample (gross, like the stage's default basis)
and seconds per sample. The accounting charges each member that cost for every input it actually
evaluated (a cascade pays for every member it ran, a router for itself on every input), and is
reported beside the stage's measurement of the whole strategy: it is an estimate, the window is the
measurement. The two differ where a member sees smaller batches inside a strategy than when it was
measured (the per-call overhead of scikit-learn and PyTorch is then spread over fewer rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ecopipe.monitor.energy import EnergyMeter


@dataclass(frozen=True)
class MemberCost:
    name: str
    joules_per_sample: float
    seconds_per_sample: float
    samples: int  # rows run inside the measuring window


def batched(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Contiguous batches of at most `batch_size` rows (as the single-model workloads batch)."""
    return np.array_split(x, max(1, -(-len(x) // batch_size)))


def measure_cost(
    name: str,
    meter: EnergyMeter,
    run: Callable[[np.ndarray], object],
    x: np.ndarray,
    batch_size: int,
    window_s: float,
) -> MemberCost:
    """Energy per sample of `run` over whole passes on `x` until the window lasts `window_s`."""
    batches = batched(x, batch_size)
    run(batches[0])  # warm-up: first-call allocations are not the steady state being charged
    started = time.perf_counter()
    start = meter.snapshot()
    samples = 0
    while True:
        for batch in batches:
            run(batch)
            samples += len(batch)
        if time.perf_counter() - started >= window_s:
            break
    window = meter.since(start)
    return MemberCost(name, window.energy.total / samples, window.duration_s / samples, samples)


@dataclass(frozen=True)
class Accounting:
    """Cost per sample x inputs evaluated, per member (and router); what the strategy *should* cost."""

    rows: int  # inputs the strategy answered
    evaluated: Mapping[str, int]  # member or "router" -> inputs it ran on
    costs: Mapping[str, float]  # member or "router" -> joules per sample

    @property
    def charged_j(self) -> dict[str, float]:
        return {name: self.costs[name] * count for name, count in self.evaluated.items()}

    @property
    def energy_j(self) -> float:
        return float(sum(self.charged_j.values()))

    @property
    def per_sample_j(self) -> float:
        return self.energy_j / self.rows if self.rows else float("nan")

    @property
    def per_1k_j(self) -> float:
        return 1000 * self.per_sample_j
