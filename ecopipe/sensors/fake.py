"""A deterministic GPU sensor for tests and CI only: it measures nothing.

It lets the whole inference stage run on a machine without a GPU. Its figures carry Source.FAKE so
they can never pass for measurements; never select it outside tests/CI.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ecopipe.sensors.base import Component, EnergySensor, Found, Request, Source
from ecopipe.sensors.nvml import trapezoid_joules

# Sub-step of the numerical integral for a power *function*; exact for constant or linear power.
_STEP_S = 1e-3
_MAX_STEPS = 100_000  # bounds the cost of one read after a long gap


class FakeGpuSensor(EnergySensor):
    """Counter = integral of `watts` over wall time since open (TESTS/CI ONLY).

    `watts` is a constant or a function of the seconds elapsed since open(); the integral is
    accumulated between reads by the trapezoid rule on <= 1 ms sub-steps, so it is monotonic and
    exact for piecewise-linear power.
    """

    component = Component.GPU
    source = Source.FAKE
    resolution_s = 0.0

    def __init__(
        self,
        watts: float | Callable[[float], float],
        device: str = "gpu0",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._constant = None if callable(watts) else float(watts)
        self._watts = watts if callable(watts) else (lambda _t, w=float(watts): w)
        self.device = device
        self._clock = clock
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._last_s = 0.0  # elapsed seconds at the last read
        self._joules = 0.0

    def probe_args(self) -> dict[str, object] | None:
        if self._constant is None:
            return None  # a power function cannot cross to another process
        return {"watts": self._constant}

    @classmethod
    def power_reader(cls, watts: float) -> Callable[[], float]:
        return lambda: watts

    def _power_at(self, elapsed: float) -> float:
        w = float(self._watts(elapsed))
        if w < 0:
            raise ValueError(f"fake power must be >= 0 W, got {w} at t={elapsed}")
        return w

    def open(self) -> None:
        self._t0, self._last_s, self._joules = self._clock(), 0.0, 0.0

    def read_joules(self) -> float:
        return self.read_joules_at(self._clock())

    def read_joules_at(self, at: float) -> float:
        if self._t0 is None:
            raise RuntimeError(f"{self!r} read before open()")
        with self._lock:
            now = at - self._t0
            span = now - self._last_s
            if span > 0:
                n = min(_MAX_STEPS, max(1, math.ceil(span / _STEP_S)))
                ts = [self._last_s + span * i / n for i in range(n + 1)]
                self._joules += trapezoid_joules(ts, [self._power_at(t) for t in ts])
                self._last_s = now
            return self._joules

    def power_watts(self) -> float | None:
        if self._t0 is None:
            return None
        return self._power_at(self._clock() - self._t0)


def discover(request: Request, found: Found) -> None:
    """One simulated GPU per requested index, where `fake_gpu_watts` asks for them (tests/CI only)."""
    if request.fake_gpu_watts is not None:
        found.sensors += [FakeGpuSensor(request.fake_gpu_watts, f"gpu{i}") for i in request.gpu_indices]
