"""Background power/utilisation trace at an adaptive rate, and the sampler's own cost.

Frequency-aware: the period starts at 1/max_hz, so a one-second window still gets dozens of samples,
and grows with the elapsed time (elapsed / SAMPLES_PER_E_FOLD) down to min_hz, so a long job's
trace stays small. `frequency_hz` pins the rate. Every call here is non-blocking: no `interval=`
in psutil, no sleep on the workload's thread. The energy figures never come from this trace (they
come from the sensors' window edges); it documents what happened inside the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import psutil

from ecopipe.sensors.base import EnergySensor

# After the fast start the period is elapsed / 50: 50 samples per e-fold of the elapsed time (35 per
# doubling), until min_hz caps the period.
SAMPLES_PER_E_FOLD = 50


class Telemetry(Protocol):
    def read(self) -> dict[str, float | None]: ...


@dataclass(frozen=True)
class Trace:
    samples: pd.DataFrame  # one row per sample: t_s, power_w.<sensor>, process and GPU telemetry
    wall_s: float
    sampler_cpu_s: float  # CPU time the sampler thread itself used

    @property
    def overhead_frac(self) -> float:
        """Sampler CPU seconds per second of window: its share of one core."""
        return self.sampler_cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


def sampling_period(elapsed_s: float, min_hz: float, max_hz: float, frequency_hz: float | None) -> float:
    if frequency_hz is not None:
        return 1.0 / frequency_hz
    return min(max(elapsed_s / SAMPLES_PER_E_FOLD, 1.0 / max_hz), 1.0 / min_hz)


class PowerSampler:
    def __init__(
        self,
        sensors: Sequence[EnergySensor],
        telemetry: Sequence[Telemetry] = (),
        min_hz: float = 1.0,
        max_hz: float = 50.0,
        frequency_hz: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.sensors, self.telemetry = list(sensors), list(telemetry)
        self.min_hz, self.max_hz, self.frequency_hz = min_hz, max_hz, frequency_hz
        self._clock = clock
        self._process = psutil.Process()
        self._rows: list[dict[str, float | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._cpu_s = 0.0

    def _sample(self) -> dict[str, float | None]:
        row: dict[str, float | None] = {"t_s": self._clock() - self._started}
        for sensor in self.sensors:
            row[f"power_w.{sensor.label}"] = sensor.power_watts()
        row["process.cpu_pct"] = self._process.cpu_percent(interval=None)  # since the previous call
        row["process.rss_mb"] = self._process.memory_info().rss / 2**20
        for reader in self.telemetry:
            row.update(reader.read())
        return row

    def _loop(self) -> None:
        cpu_start = time.thread_time()
        self._process.cpu_percent(interval=None)  # primes the non-blocking counter
        while True:
            self._rows.append(self._sample())
            elapsed = self._clock() - self._started
            if self._stop.wait(sampling_period(elapsed, self.min_hz, self.max_hz, self.frequency_hz)):
                break
        self._rows.append(self._sample())  # the window's end
        self._cpu_s = time.thread_time() - cpu_start

    def start(self) -> None:
        self._rows, self._started = [], self._clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ecopipe-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> Trace:
        assert self._thread is not None, "stop() before start()"
        self._stop.set()
        self._thread.join()
        wall = self._clock() - self._started
        return Trace(pd.DataFrame(self._rows), wall, self._cpu_s)
