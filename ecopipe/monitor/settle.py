"""Waiting for a device's power to settle before an idle baseline is taken.

After work a device keeps drawing more than its idle for seconds (a GPU's clocks and fans come down, a
CPU leaves its turbo states): a baseline read at once is too high and biases every net figure. Power
is read over consecutive windows until the last few lie within a tolerance of their mean, or until a
timeout; either way the caller says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

SETTLE_TOLERANCE = 0.05  # the last readings' spread, max - min, as a share of their mean
SETTLE_WINDOWS = 3  # readings that must agree
# A job's settle windows span this many refreshes of its coarsest sensor, and at least the minimum.
REFRESHES_PER_WINDOW = 5
MIN_WINDOW_S = 0.2


def window_for(resolution_s: float) -> float:
    """A settle window long enough for a sensor refreshing every `resolution_s` to move."""
    return max(MIN_WINDOW_S, REFRESHES_PER_WINDOW * resolution_s)


def is_flat(watts: list[float] | tuple[float, ...], tolerance: float = SETTLE_TOLERANCE) -> bool:
    """The last SETTLE_WINDOWS readings within `tolerance` of their mean (max - min)."""
    last = watts[-SETTLE_WINDOWS:]
    if len(last) < SETTLE_WINDOWS:
        return False
    mean = sum(last) / len(last)
    return mean > 0 and (max(last) - min(last)) <= tolerance * mean


@dataclass(frozen=True)
class Settling:
    watts: tuple[float, ...]  # one mean power per window, in the order read
    seconds: float
    window_s: float
    tolerance: float = SETTLE_TOLERANCE

    @property
    def settled(self) -> bool:
        return is_flat(self.watts, self.tolerance)

    @property
    def settled_w(self) -> float:
        last = self.watts[-SETTLE_WINDOWS:]
        return sum(last) / len(last) if last else float("nan")

    def describe(self) -> str:
        """One line for the summary: how long the device took to settle, or that it did not."""
        spread = f"their spread within {100 * self.tolerance:g}% of their mean"
        rule = f"{SETTLE_WINDOWS} windows of {self.window_s:g} s, {spread}"
        if self.settled:
            return f"power settled in {self.seconds:.1f} s ({rule})"
        readings = ", ".join(f"{w:.3g}" for w in self.watts[-SETTLE_WINDOWS:])
        return (
            f"power did NOT settle in {self.seconds:.1f} s ({rule}; last: {readings} W): "
            "the baseline may be biased"
        )


def settle(
    read_joules: Callable[[], float],
    window_s: float,
    max_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
    tolerance: float = SETTLE_TOLERANCE,
) -> Settling:
    """Mean power over consecutive windows of a cumulative energy reading (J) until it is flat, or
    until `max_s` has passed."""
    watts: list[float] = []
    start = clock()
    while not is_flat(watts, tolerance) and clock() - start < max_s:
        before, t0 = read_joules(), clock()
        sleep(window_s)
        watts.append((read_joules() - before) / (clock() - t0))
    return Settling(tuple(watts), clock() - start, window_s, tolerance)
