"""An independent reading of the GPU's energy counter, and a job's per-trial energy set against it.

Run as its own process (`python -m bench.gpu.counter --out trace.csv`), it reads
`nvmlDeviceGetTotalEnergyConsumption` through pynvml directly, none of ecopipe's sensor code, at a
fixed rate and appends `unix_s,energy_mj` rows until SIGTERM. `compare` interpolates that trace at
each trial's wall-clock edges (logged by the job) and puts the two figures side by side. With
`--fake-watts` it stands in for the simulated GPU of the CPU rehearsal: energy = watts x wall time.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd


def nvml_counter_mj(index: int) -> Callable[[], float]:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))


def simulated_counter_mj(watts: float) -> Callable[[], float]:
    origin = time.time()
    return lambda: watts * (time.time() - origin) * 1000.0


def record(read_mj: Callable[[], float], out: Path, hz: float, stop: threading.Event) -> None:
    """Append (unix time, counter mJ) rows at `hz` until `stop`; each row is flushed as it is taken."""
    period = 1.0 / hz
    with out.open("w") as trace:
        trace.write("unix_s,energy_mj\n")
        next_at = time.time()
        while not stop.is_set():
            trace.write(f"{time.time():.6f},{read_mj():.1f}\n")
            trace.flush()
            next_at += period
            stop.wait(max(0.0, next_at - time.time()))


@dataclass(frozen=True)
class TrialComparison:
    trial: int
    start_unix_s: float
    end_unix_s: float
    job_j: float  # the job's own GPU energy for the trial
    independent_j: float  # the separate process's counter over the same edges

    @property
    def ratio(self) -> float:
        return self.job_j / self.independent_j if self.independent_j else float("nan")

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {"ratio": self.ratio}


def energy_between(trace: pd.DataFrame, start_unix_s: float, end_unix_s: float) -> float:
    """Joules the recorded counter rose between two instants, interpolated linearly at both."""
    first, last = trace["unix_s"].iloc[0], trace["unix_s"].iloc[-1]
    if not first <= start_unix_s <= end_unix_s <= last:
        raise ValueError(
            f"window {start_unix_s:.3f}-{end_unix_s:.3f} is not inside the trace {first:.3f}-{last:.3f}"
        )
    mj = np.interp([start_unix_s, end_unix_s], trace["unix_s"], trace["energy_mj"])
    return float(mj[1] - mj[0]) / 1000.0


def compare(
    trace: pd.DataFrame, starts: Sequence[float], ends: Sequence[float], job_j: Sequence[float]
) -> list[TrialComparison]:
    return [
        TrialComparison(i, start, end, job, energy_between(trace, start, end))
        for i, (start, end, job) in enumerate(zip(starts, ends, job_j, strict=True))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Record a GPU energy counter with timestamps until SIGTERM.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0, help="NVML index of the GPU")
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--fake-watts", type=float, help="the CPU rehearsal's simulated GPU")
    args = parser.parse_args()
    read = (
        simulated_counter_mj(args.fake_watts) if args.fake_watts is not None else nvml_counter_mj(args.index)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    record(read, args.out, args.hz, stop)


if __name__ == "__main__":
    main()
