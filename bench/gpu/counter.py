"""Two NVML signals of one GPU, recorded by a process of their own, and a job's trials set against them.

Run as its own process (`python -m bench.gpu.counter --out trace.csv --index N`), it reads through
pynvml directly, not through ecopipe's sensors, at a fixed rate: the total-energy counter
(`nvmlDeviceGetTotalEnergyConsumption`, mJ) and the instantaneous power field
(`NVML_FI_DEV_POWER_INSTANT`, else the 1-s average `nvmlDeviceGetPowerUsage`, named in the trace), and
appends `unix_s,energy_mj,power_w` rows until SIGTERM. `compare` sets each trial the job measured
(its wall-clock edges are logged with it) against the counter interpolated at those edges and against
the power field integrated between them.

Both signals come from the same board's NVML: agreement is a consistency check (units, device, edges,
a counter that moves), not an external meter. With `--fake-watts` it stands in for the simulated GPU
of the CPU rehearsal: energy = watts x wall time, power = watts.
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

# Tolerances of the counter check, stated in the report. The job and the recorder read the same counter,
# which steps every refresh (~100 ms): interpolating between the recorder's samples can put each edge up
# to half a refresh of power off, 2% of a 5-s window. The power field is a second signal: an earlier
# probe of this project on an H100 saw its integral under-read the counter by about 9% under load.
SAME_COUNTER_TOLERANCE = 0.03
POWER_FIELD_TOLERANCE = 0.15

Reading = Callable[[], tuple[float, float]]  # () -> (counter mJ, power W)


def nvml_reader(index: int) -> tuple[Reading, str]:
    """The counter and the best power field of NVML device `index`, and that field's name."""
    import pynvml

    from ecopipe.sensors.nvml import field_value  # unpacks the C union whatever its declared type

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def instant_w() -> float:
        value = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != pynvml.NVML_SUCCESS:
            raise pynvml.NVMLError(value.nvmlReturn)
        return field_value(value) / 1000.0

    def average_w() -> float:
        return pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    try:
        instant_w()
        power, field = instant_w, "NVML_FI_DEV_POWER_INSTANT"
    except (pynvml.NVMLError, AttributeError):
        power, field = average_w, "nvmlDeviceGetPowerUsage (1-s average)"
    return lambda: (float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)), power()), field


def simulated_reader(watts: float) -> tuple[Reading, str]:
    origin = time.time()
    return lambda: (watts * (time.time() - origin) * 1000.0, watts), "simulated"


def record(read: Reading, out: Path, hz: float, stop: threading.Event) -> None:
    """Append (unix time, counter mJ, power W) rows at `hz` until `stop`; each row flushed as taken."""
    period = 1.0 / hz
    with out.open("w") as trace:
        trace.write("unix_s,energy_mj,power_w\n")
        next_at = time.time()
        while not stop.is_set():
            energy_mj, power_w = read()
            trace.write(f"{time.time():.6f},{energy_mj:.1f},{power_w:.3f}\n")
            trace.flush()
            next_at += period
            stop.wait(max(0.0, next_at - time.time()))


def _check_inside(trace: pd.DataFrame, start: float, end: float) -> None:
    first, last = trace["unix_s"].iloc[0], trace["unix_s"].iloc[-1]
    if not first <= start <= end <= last:
        raise ValueError(f"window {start:.3f}-{end:.3f} is not inside the trace {first:.3f}-{last:.3f}")


def counter_between(trace: pd.DataFrame, start: float, end: float) -> float:
    """Joules the recorded counter rose between two instants, interpolated linearly at both."""
    _check_inside(trace, start, end)
    mj = np.interp([start, end], trace["unix_s"], trace["energy_mj"])
    return float(mj[1] - mj[0]) / 1000.0


def power_between(trace: pd.DataFrame, start: float, end: float) -> float:
    """Joules of the recorded power field between two instants: trapezoids, the edges interpolated."""
    _check_inside(trace, start, end)
    inside = trace[(trace["unix_s"] > start) & (trace["unix_s"] < end)]
    edges = np.interp([start, end], trace["unix_s"], trace["power_w"])
    times = np.concatenate([[start], inside["unix_s"].to_numpy(), [end]])
    watts = np.concatenate([[edges[0]], inside["power_w"].to_numpy(), [edges[1]]])
    return float(np.sum(np.diff(times) * (watts[1:] + watts[:-1]) / 2.0))


@dataclass(frozen=True)
class TrialComparison:
    trial: int
    start_unix_s: float
    end_unix_s: float
    job_j: float  # the job's own GPU energy for the trial (its meter: the counter)
    counter_j: float  # the counter, read by the recorder process, over the same edges
    power_field_j: float  # the power field, read by the recorder process, integrated over them

    @property
    def job_vs_counter(self) -> float:
        return self.job_j / self.counter_j if self.counter_j else float("nan")

    @property
    def power_field_vs_counter(self) -> float:
        return self.power_field_j / self.counter_j if self.counter_j else float("nan")

    def problems(self) -> list[str]:
        """What this trial shows wrong, each in one line; empty when both agreements hold."""
        found = []
        if self.counter_j <= 0:
            found.append(f"trial {self.trial + 1}: the counter did not move ({self.counter_j:.4g} J)")
            return found
        if abs(self.job_vs_counter - 1) > SAME_COUNTER_TOLERANCE:
            found.append(
                f"trial {self.trial + 1}: the job's counter reading is "
                f"{100 * (self.job_vs_counter - 1):+.1f}% from the recorder's "
                f"(tolerance {100 * SAME_COUNTER_TOLERANCE:.0f}%)"
            )
        if abs(self.power_field_vs_counter - 1) > POWER_FIELD_TOLERANCE:
            found.append(
                f"trial {self.trial + 1}: the power field's integral is "
                f"{100 * (self.power_field_vs_counter - 1):+.1f}% from the counter "
                f"(tolerance {100 * POWER_FIELD_TOLERANCE:.0f}%)"
            )
        return found

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {
            "job_vs_counter": self.job_vs_counter,
            "power_field_vs_counter": self.power_field_vs_counter,
        }


def compare(
    trace: pd.DataFrame, starts: Sequence[float], ends: Sequence[float], job_j: Sequence[float]
) -> list[TrialComparison]:
    return [
        TrialComparison(
            i, start, end, job, counter_between(trace, start, end), power_between(trace, start, end)
        )
        for i, (start, end, job) in enumerate(zip(starts, ends, job_j, strict=True))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Record a GPU's energy counter and power field until SIGTERM."
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--index", type=int, help="NVML index of the GPU (resolved from its UUID)")
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--fake-watts", type=float, help="the CPU rehearsal's simulated GPU")
    args = parser.parse_args()
    if args.fake_watts is None and args.index is None:
        parser.error("--index (NVML's, resolved from the GPU's UUID) or --fake-watts is required")
    read, field = (
        simulated_reader(args.fake_watts) if args.fake_watts is not None else nvml_reader(args.index)
    )
    args.out.with_suffix(".field").write_text(field)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    record(read, args.out, args.hz, stop)


if __name__ == "__main__":
    main()
