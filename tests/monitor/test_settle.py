"""The idle settle: power read until three readings agree."""

from __future__ import annotations

import pytest

from ecopipe.monitor.settle import is_flat, settle


def scripted_counter(watts: list[float], window_s: float):
    """A counter (J) whose power over each settle window is the next of `watts`, on a clock that sleeps."""
    now, energy_j, windows = [0.0], [0.0], iter(watts)

    def sleep(seconds: float) -> None:
        energy_j[0] += next(windows) * seconds
        now[0] += seconds

    return (lambda: energy_j[0]), sleep, (lambda: now[0])


def test_idle_settles_when_three_readings_agree_or_says_it_did_not():
    read, sleep, clock = scripted_counter([120.0, 95.0, 80.0, 71.0, 70.0, 69.5, 70.2, 99.0], 1.0)
    found = settle(read, 1.0, 20.0, sleep, clock)
    assert found.settled and found.watts == pytest.approx((120, 95, 80, 71, 70, 69.5))
    assert found.settled_w == pytest.approx(70.1666, rel=1e-4) and found.seconds == pytest.approx(6.0)
    read, sleep, clock = scripted_counter([120.0, 100.0, 90.0, 80.0, 70.0, 60.0], 1.0)
    falling = settle(read, 1.0, 4.0, sleep, clock)
    assert not falling.settled and len(falling.watts) == 4 and falling.seconds == pytest.approx(4.0)
    assert (
        not is_flat([70.0, 70.0]) and is_flat([100.0, 70.0, 71.0, 72.0]) and not is_flat([70.0, 71.0, 74.0])
    )
