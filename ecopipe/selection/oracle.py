"""The oracle: for each input, the cheapest member that is right, known in hindsight.

Inputs that no member gets right are given the cheapest member: no choice can help them, so paying
for a heavier one would be waste (the reference system sent them to the heaviest, so its router
learnt to spend most on hopeless inputs). Costs here are each member's price per input at full
batches (`costs.Prices.per_sample`): the queued runners pay that, plus at most one partial batch per
member and pass.
"""

from __future__ import annotations

import numpy as np


def cheapest_right(correct: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Per row (column of `correct`, members x rows): the cheapest right member, else the cheapest."""
    priced = np.where(correct, costs[:, None], np.inf)
    choice = priced.argmin(axis=0)
    return np.where(correct.any(axis=0), choice, int(np.argmin(costs)))


def oracle_frontier(correct: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, energy per sample): the least energy any per-input choice of members can spend for
    each achievable accuracy. Every input costs at least the cheapest member; an input answered right
    costs at least its cheapest right member; so reaching k right answers costs at least the cheapest
    member everywhere plus the k smallest extra costs of making an input right. Any strategy (cascade,
    router, a single member) lies on or above this curve under the same per-member costs.
    """
    rows = correct.shape[1]
    floor = float(costs.min())
    solvable = correct.any(axis=0)
    extra = np.sort(costs[cheapest_right(correct, costs)][solvable] - floor)
    accuracy = np.arange(len(extra) + 1) / rows
    energy = floor + np.concatenate([[0.0], np.cumsum(extra)]) / rows
    return accuracy, energy


def oracle_energy_at(accuracy: float, frontier: tuple[np.ndarray, np.ndarray]) -> float:
    """The least energy per sample on the oracle frontier reaching at least `accuracy` (inf if none)."""
    accuracies, energies = frontier
    reach = accuracies >= accuracy - 1e-12
    return float(energies[reach].min()) if reach.any() else float("inf")
