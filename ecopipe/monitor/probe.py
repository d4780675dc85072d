"""The sampler's own process: it polls power and telemetry while the workload runs undisturbed.

A sampling *thread* in the workload's process takes the GIL at every sample: on a 2-core machine a
bare thread waking at 50 Hz cost a microsecond-scale scikit-learn loop 8% of its throughput. A
separate process costs the workload nothing but a share of a core, and that share is measured.

Protocol (see PowerSampler): argv[1] is a JSON spec; the process prints "ready" once its first sample
is taken, writes one JSON object per sample to the spec's output file, stops when the job writes
"stop" and closes its stdin (an EOF without "stop", or a job process that is gone, means the job
died: the trace's folder is removed), and ends the file with {"sampler_cpu_s": ...}.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

from ecopipe.sensors.base import SensorUnavailable, load_class, rebuild_power_reader

# After the fast start the period is elapsed / 50: 50 samples per e-fold of the elapsed time (35 per
# doubling), until min_hz caps the period.
SAMPLES_PER_E_FOLD = 50


def sampling_period(elapsed_s: float, min_hz: float, max_hz: float, frequency_hz: float | None) -> float:
    if frequency_hz is not None:
        return 1.0 / frequency_hz
    return min(max(elapsed_s / SAMPLES_PER_E_FOLD, 1.0 / max_hz), 1.0 / min_hz)


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run(spec: dict, stop: threading.Event) -> None:
    process = psutil.Process(spec["pid"])
    readers = {f"power_w.{s['label']}": rebuild_power_reader(s) for s in spec["sensors"]}
    telemetry = []
    for reader in spec["telemetry"]:
        try:
            telemetry.append(load_class(reader["reader"])(**reader["args"]))
        except SensorUnavailable:  # no NVML (a simulated GPU, or the energy sensor already warned)
            continue
    started = time.perf_counter()
    process.cpu_percent(interval=None)  # primes the non-blocking counter
    with open(spec["output"], "w") as out:

        def sample() -> None:
            row: dict[str, float | None] = {"t_s": time.perf_counter() - started}
            for name, read in readers.items():
                row[name] = read()
            with process.oneshot():
                row["process.cpu_pct"] = process.cpu_percent(interval=None)
                row["process.rss_mb"] = process.memory_info().rss / 2**20
            for reader in telemetry:
                row.update(reader.read())
            out.write(json.dumps(row) + "\n")

        sample()
        cpu_at_start = _cpu_seconds()  # the window starts now: imports and set-up are not its cost
        print("ready", flush=True)
        while not stop.wait(
            sampling_period(
                time.perf_counter() - started, spec["min_hz"], spec["max_hz"], spec["frequency_hz"]
            )
        ):
            sample()
        sample()  # the window's end
        out.write(json.dumps({"sampler_cpu_s": _cpu_seconds() - cpu_at_start}) + "\n")


def main() -> None:
    spec = json.loads(sys.argv[1])
    # Below the workload's priority: on a busy machine the trace waits a little, the workload does not.
    with contextlib.suppress(OSError):
        os.nice(10)
    stop = threading.Event()
    # Ctrl-C reaches the whole process group: the job, not the sampler, decides when sampling ends.
    # SIGTERM (a scheduler stopping the group) ends the trace cleanly, as a closed stdin does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    orphaned = threading.Event()

    def wait_for_eof() -> None:
        # The job writes "stop" before closing stdin; an EOF without it means the job died.
        if sys.stdin.read().strip() != "stop":
            orphaned.set()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    try:
        run(spec, stop)
    except psutil.NoSuchProcess:  # the job died between two samples, before its stdin's end was seen
        orphaned.set()
    if orphaned.is_set():  # the job died (SIGKILL, out of memory): nobody will read the trace
        shutil.rmtree(Path(spec["output"]).parent, ignore_errors=True)


if __name__ == "__main__":
    main()
