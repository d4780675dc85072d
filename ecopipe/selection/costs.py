"""What each member costs, measured; and the per-member accounting of a strategy's run.

A member's cost is measured with the job's EnergyMeter over a short window of repeated passes on
validation rows at the job's batch size: joules per sample (gross, like the stage's default basis)
and seconds per sample. The accounting charges each member that cost for every input it actually
evaluated (a cascade pays for every member it ran, a router for itself on every input), and is
reported beside the stage's measurement of the whole strategy: it is an estimate, the window is the
measurement. A member inside a strategy sees smaller batches than when it was measured, and the
per-call overhead of scikit-learn and PyTorch is then spread over fewer rows: so each member is
measured at two batch sizes and charged per call plus per row (an affine cost), not per sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from ecopipe.monitor.energy import EnergyMeter


@dataclass(frozen=True)
class MemberCost:
    name: str
    joules_per_sample: float  # at the job's batch size: what ordering and tuning compare
    seconds_per_sample: float
    samples: int  # rows run inside the measuring window
    joules_per_call: float = 0.0  # the affine cost of one call on n rows: per_call + n x per_row
    joules_per_row: float | None = None  # None: joules_per_sample (measured at one batch size only)

    @property
    def per_row(self) -> float:
        return self.joules_per_sample if self.joules_per_row is None else self.joules_per_row


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


SMALL_BATCH_DIVISOR = 8  # the second batch size of the affine cost: batch_size / 8, at least 1


def measure_affine_cost(
    name: str,
    meter: EnergyMeter,
    run: Callable[[np.ndarray], object],
    x: np.ndarray,
    batch_size: int,
    window_s: float,
) -> MemberCost:
    """Cost per call and per row, from joules per sample at the batch size and at a smaller one.

    e(n) = per_call / n + per_row; two batch sizes give both. Noise may make one negative: it is
    clamped to 0 and the other keeps the measurement at the job's batch size.
    """
    full = measure_cost(name, meter, run, x, batch_size, window_s)
    small_size = max(1, batch_size // SMALL_BATCH_DIVISOR)
    if small_size == batch_size:
        return full
    small = measure_cost(name, meter, run, x, small_size, window_s)
    per_call = max(
        (small.joules_per_sample - full.joules_per_sample) / (1 / small_size - 1 / batch_size), 0.0
    )
    per_row = max(full.joules_per_sample - per_call / batch_size, 0.0)
    return replace(full, joules_per_call=per_call, joules_per_row=per_row)


@dataclass(frozen=True)
class Accounting:
    """Measured cost per call and per row x calls and inputs, per member (and router): what the
    strategy *should* cost."""

    rows: int  # inputs the strategy answered
    evaluated: Mapping[str, int]  # member or "router" -> inputs it ran on
    calls: Mapping[str, int]  # member or "router" -> calls (batches or sub-batches) it ran
    costs: Mapping[str, MemberCost]

    @property
    def charged_j(self) -> dict[str, float]:
        return {
            name: self.costs[name].per_row * rows + self.costs[name].joules_per_call * self.calls[name]
            for name, rows in self.evaluated.items()
        }

    @property
    def energy_j(self) -> float:
        return float(sum(self.charged_j.values()))

    @property
    def per_sample_j(self) -> float:
        return self.energy_j / self.rows if self.rows else float("nan")

    @property
    def per_1k_j(self) -> float:
        return 1000 * self.per_sample_j
