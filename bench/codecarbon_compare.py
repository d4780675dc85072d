"""ecopipe beside CodeCarbon 3.3.2 on the default job's workload, on this machine.

Each tool's CPU, RAM and total energy per 1,000 inferences and the method behind it, so a reader sees
where and why the two differ. ecopipe runs the real job (its gross figures over its measured windows);
CodeCarbon's OfflineEmissionsTracker runs around the same workload, built the same way and warmed up
the same way, for as long as ecopipe's windows lasted, in each of its two tracking modes.
"""

from __future__ import annotations

import logging
import tempfile
import time

import pandas as pd
from hydra import compose, initialize_config_dir

from ecopipe.config import CONFIG_DIR
from ecopipe.job import run_job
from ecopipe.workloads.factory import build_workload

NEEDS = "CodeCarbon 3.3.2, the bench extra: .venv/bin/pip install -e '.[bench]'"
JOULES_PER_KWH = 3.6e6

# What CodeCarbon 3.3.2 does where, as here, there is no RAPL and the CPU is not in its table
# (codecarbon/external/hardware.py CPU._get_power_from_cpu_load, external/ram.py RAM._calculate_ram_power).
CODECARBON_METHOD = {
    "machine": (
        "TDP {tdp:g} W (4 W x {threads} threads, CPU unknown) x (0.1 + 0.9 x load^3), "
        "load of the whole machine",
        "5 W per DIMM, DIMMs guessed from the installed {memory:.1f} GB: {ram_w:g} W for the machine",
    ),
    "process": (
        "TDP {tdp:g} W (4 W x {threads} threads, CPU unknown) x the process's CPU % / {threads} CPUs, "
        "no idle floor",
        "5 W per DIMM, DIMMs guessed from the process's memory (at least 2): {ram_w:g} W",
    ),
}


def _ecopipe(tmp: str, *overrides: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp}/compare.db"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={uri}", *overrides])
    outcome = run_job(cfg)
    m, tags = outcome.metrics, MlflowClient(uri).get_run(outcome.run_id).data.tags
    return {
        "cpu_j": m["energy_per_1k_gross_j.cpu"],
        "ram_j": m["energy_per_1k_gross_j.ram"],
        "total_j": m["energy_per_1k_gross_j.total"],
        "window_s": m["window_s"],
        "samples": int(m["samples"]),
        "cpu_method": tags.get("energy_method.cpu", tags["energy_source.cpu"]),
        "ram_method": tags.get("energy_method.ram", tags["energy_source.ram"]),
    }


def _codecarbon(mode: str, seconds: float) -> dict[str, object]:
    from codecarbon import OfflineEmissionsTracker

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config")
    workload = build_workload(cfg)  # type: ignore[arg-type]
    workload.load()
    workload.fit()
    for batch in list(workload.batches())[:2]:  # the job's warm-up
        workload.predict(batch)
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",  # energy does not depend on it; offline needs one
        tracking_mode=mode,
        measure_power_secs=1,
        save_to_file=False,
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start()
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        samples += workload.run_pass()[0].samples
    tracker.stop()
    data = tracker.final_emissions_data
    cpu = next(h for h in tracker._hardware if type(h).__name__ == "CPU")  # its TDP and thread count
    cpu_how, ram_how = CODECARBON_METHOD[mode]
    facts = {
        "tdp": cpu._tdp,
        "threads": cpu._cpu_count,
        "memory": data.ram_total_size,
        "ram_w": data.ram_power,
    }
    per_1k = 1000 / samples
    return {
        "cpu_j": data.cpu_energy * JOULES_PER_KWH * per_1k,
        "ram_j": data.ram_energy * JOULES_PER_KWH * per_1k,
        "total_j": data.energy_consumed * JOULES_PER_KWH * per_1k,
        "window_s": data.duration,
        "samples": samples,
        "cpu_method": cpu_how.format(**facts),
        "ram_method": ram_how.format(**facts),
    }


def run() -> pd.DataFrame:
    try:
        import codecarbon
    except ImportError:
        return pd.DataFrame()
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["ecopipe (default: the job's share)"] = _ecopipe(tmp)
        rows["ecopipe (monitor.ram_estimate=machine)"] = _ecopipe(tmp, "monitor.ram_estimate=machine")
    seconds = float(rows["ecopipe (default: the job's share)"]["window_s"])  # type: ignore[arg-type]
    for mode in ("machine", "process"):
        rows[f"CodeCarbon {codecarbon.__version__} (tracking_mode={mode})"] = _codecarbon(mode, seconds)
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("tool").reset_index()
    return frame.rename(
        columns={
            "cpu_j": "CPU J / 1k",
            "ram_j": "RAM J / 1k",
            "total_j": "total J / 1k",
            "window_s": "measured s",
            "cpu_method": "CPU method",
            "ram_method": "RAM method",
        }
    )
