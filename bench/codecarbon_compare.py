"""ecopipe beside CodeCarbon 3.3.2 on the default job's workload, on this machine, repeated.

Each tool's CPU, RAM and total energy per 1,000 inferences and the method behind it, so a reader sees
where and why the two differ, and by how much a rerun moves them. ecopipe runs the real job and is
read back from what the job logged to MLflow (its gross figures, their low/high bands where the job
logs them, and its method tags), so the bench follows ecopipe's models as they change. CodeCarbon's
OfflineEmissionsTracker runs around the same workload, built and warmed up the same way, for as long
as the ecopipe run before it measured, in each of its two tracking modes. The runs interleave (ecopipe,
CodeCarbon machine, ecopipe with machine RAM, CodeCarbon process, then again) so drift hits all alike.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from bench.common import RESULTS, job_config, machine
from bench.power_plot import PowerSeries, plot_power
from ecopipe.names import Tag, TagFamily

NEEDS = "CodeCarbon 3.3.2, the bench extra: .venv/bin/pip install -e '.[bench]'"
JOULES_PER_KWH = 3.6e6
REPEATS = 5
PLOT = RESULTS / "codecarbon_power.png"
MEASURE_S = 1  # CodeCarbon's measure_power_secs
SHORTEST_INTERVAL_S = 0.05  # CodeCarbon measures once at start(): a near-empty interval, not plotted

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

# The interleaved order of one repeat: (label, ecopipe overrides) or (label, CodeCarbon tracking mode).
ECOPIPE_DEFAULT = "ecopipe (default: the job's share)"
ECOPIPE_MACHINE_RAM = "ecopipe (monitor.ram_estimate=machine)"
COMPONENTS = ("cpu", "ram", "total")
BANDS = ("low", "high")
GROSS = "energy_per_1k_gross_j"


def codecarbon_label(mode: str, version: str = "3.3.2") -> str:
    return f"CodeCarbon {version} (tracking_mode={mode})"


@dataclass
class Run:
    """One tool's run: its figures per 1,000 inferences (J) and how it charged power over time."""

    tool: str
    figures: dict[str, float]  # cpu_j, ram_j, total_j, and cpu_j_low... where the tool logs a band
    window_s: float
    samples: int
    cpu_method: str
    ram_method: str
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)  # start_s, end_s, cpu_w, ram_w
    load: pd.DataFrame = field(default_factory=pd.DataFrame)  # t_s, pct (what its CPU model reads)
    machine_load_pct: float = math.nan  # the whole machine's CPU load over the span (CodeCarbon runs)
    overlaps: int = 0  # intervals CodeCarbon measured twice
    commit: str = ""


def ecopipe_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """cpu_j, ram_j, total_j (and `_low` / `_high` where logged) from a job's gross per-1k metrics.

    Reads `energy_per_1k_gross_j.<component>` with any band suffix (`.cpu_low`, `.cpu.low`...);
    `energy_per_1k_gross_j[_low]` alone is the total. Other keys (ci95, cv, gpu) are left out.
    """
    found: dict[str, tuple[bool, float]] = {}
    for key, value in metrics.items():
        if key != GROSS and not key.startswith((f"{GROSS}.", f"{GROSS}_")):
            continue
        tokens = [t for t in re.split(r"[._]", key[len(GROSS) :]) if t]
        components = [t for t in tokens if t in (*COMPONENTS, "gpu")]
        bands = [t for t in tokens if t in BANDS]
        if len(tokens) != len(components) + len(bands) or len(components) > 1 or len(bands) > 1:
            continue
        component = components[0] if components else "total"
        if component == "gpu":
            continue
        name = f"{component}_j" + (f"_{bands[0]}" if bands else "")
        explicit = bool(components)
        if name not in found or (explicit and not found[name][0]):
            found[name] = (explicit, float(value))
    missing = [f"{c}_j" for c in COMPONENTS if f"{c}_j" not in found]
    if missing:
        raise KeyError(f"the job logged no {GROSS} figure for {missing}")
    return {name: value for name, (_, value) in found.items()}


def spread(values: Sequence[float]) -> str:
    """`median (min–max)`, 3 significant figures."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}–{max(values):.3g})"


def representative(totals: Mapping[str, Sequence[float]]) -> int:
    """The repeat nearest every tool's median total: least sum of |log(total / median)| over tools."""
    repeats = min(len(v) for v in totals.values())

    def distance(r: int) -> float:
        return sum(abs(math.log(v[r] / statistics.median(v))) for v in totals.values() if min(v) > 0)

    return min(range(repeats), key=distance)


def summarise(runs: Mapping[str, Sequence[Run]], reference: str = ECOPIPE_DEFAULT) -> pd.DataFrame:
    """One row per tool: n, median (min–max) of each figure, the per-repeat total ratio to
    `reference` (runs of one repeat paired), the median measured span and the method strings."""
    banded = any(
        f"{c}_j_{b}" in run.figures for rs in runs.values() for run in rs for c in COMPONENTS for b in BANDS
    )
    rows = []
    for tool, rs in runs.items():
        ratios = [
            run.figures["total_j"] / ref.figures["total_j"]
            for run, ref in zip(rs, runs[reference], strict=False)
            if ref.figures["total_j"] > 0
        ]
        row: dict[str, object] = {"tool": tool, "n": len(rs)}
        for component in COMPONENTS:
            row[f"{component.upper() if component != 'total' else 'total'} J / 1k: median (min–max)"] = (
                spread([r.figures[f"{component}_j"] for r in rs])
            )
        if banded:
            for component in COMPONENTS:
                lows = [r.figures.get(f"{component}_j_low") for r in rs]
                highs = [r.figures.get(f"{component}_j_high") for r in rs]
                name = f"{component.upper() if component != 'total' else 'total'} band, low–high (medians)"
                row[name] = (
                    f"{statistics.median(lows):.3g}–{statistics.median(highs):.3g}"  # type: ignore[type-var]
                    if None not in lows and None not in highs
                    else "none logged"
                )
        row[f"total ÷ {reference}, per repeat"] = spread(ratios) if ratios else ""
        row["measured s (median)"] = f"{statistics.median(r.window_s for r in rs):.2f}"
        row["CPU method"] = " / ".join(dict.fromkeys(r.cpu_method for r in rs))
        row["RAM method"] = " / ".join(dict.fromkeys(r.ram_method for r in rs))
        rows.append(row)
    return pd.DataFrame(rows)


def _history(client: object, run_id: str, key: str) -> list[tuple[int, int, float]]:
    """(step, timestamp ms, value) of a logged metric, in step order."""
    history = client.get_metric_history(run_id, key)  # type: ignore[attr-defined]
    return sorted((m.step, m.timestamp, m.value) for m in history)


def ecopipe_power(client: object, run_id: str, cpus: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Power per measured window (its logged energy / its duration, at its logged wall-clock edges),
    and the job's process CPU from the sampler's trace (system/process.cpu_pct), in 0.5-s means."""
    series = {
        key: {step: value for step, _, value in _history(client, run_id, key)}
        for key in (
            "trial_start_unix_s",
            "trial_end_unix_s",
            "trial_window_s",
            "trial_energy_j.cpu",
            "trial_energy_j.ram",
        )
    }
    steps = sorted(series["trial_start_unix_s"])
    if not steps:
        return pd.DataFrame(), pd.DataFrame()
    t0 = series["trial_start_unix_s"][steps[0]]
    segments = pd.DataFrame(
        {
            "start_s": [series["trial_start_unix_s"][s] - t0 for s in steps],
            "end_s": [series["trial_end_unix_s"][s] - t0 for s in steps],
            "cpu_w": [series["trial_energy_j.cpu"][s] / series["trial_window_s"][s] for s in steps],
            "ram_w": [series["trial_energy_j.ram"][s] / series["trial_window_s"][s] for s in steps],
        }
    )
    trace = pd.DataFrame(
        [
            (ts / 1000 - t0, value / cpus)
            for _, ts, value in _history(client, run_id, "system/process.cpu_pct")
        ],
        columns=["t_s", "pct"],
    )
    trace = trace[(trace["t_s"] >= 0) & (trace["t_s"] <= segments["end_s"].max())]
    if not trace.empty:
        trace = (
            trace.groupby((trace["t_s"] // 0.5) * 0.5 + 0.25)["pct"].mean().rename_axis("t_s").reset_index()
        )
    return segments, trace


def _git_state() -> str:
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ecopipe", "conf"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return " + uncommitted changes in ecopipe/ or conf/" if dirty else ""


def _ecopipe(uri: str, label: str, *overrides: str) -> Run:
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from ecopipe.config import CONFIG_DIR
    from ecopipe.job import run_job

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        raw = compose("config", overrides=[f"tracking.uri={uri}", *overrides])
    outcome = run_job(raw)
    client = MlflowClient(uri)
    data = client.get_run(outcome.run_id).data
    metrics, tags = data.metrics, data.tags
    segments, load = ecopipe_power(client, outcome.run_id, psutil.cpu_count() or 1)
    return Run(
        tool=label,
        figures=ecopipe_figures(metrics),
        window_s=metrics["window_s"],
        samples=int(metrics["samples"]),
        cpu_method=tags.get(
            TagFamily.ENERGY_METHOD.of("cpu"), tags.get(TagFamily.ENERGY_SOURCE.of("cpu"), "")
        ),
        ram_method=tags.get(
            TagFamily.ENERGY_METHOD.of("ram"), tags.get(TagFamily.ENERGY_SOURCE.of("ram"), "")
        ),
        segments=segments,
        load=load,
        commit=tags.get(Tag.OLD_COMMIT, "") or "",
    )


class Intervals:
    """Each CodeCarbon measurement as it happens: its interval, the CPU and RAM power it charged over
    it (CodeCarbon adds power x interval to its energy) and the CPU load its model reads (the
    machine's, or this process's). Wraps the tracker's own measurement step (CodeCarbon 3.3.2's
    `_do_measurements`, run every measure_power_secs and at stop); CodeCarbon's behaviour is unchanged."""

    def __init__(self, tracker: object, cpus: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tracker, self.cpus, self.clock = tracker, cpus, clock
        self.rows: list[dict[str, float]] = []
        self.t0 = clock()
        self._machine, self._process = psutil.cpu_times(), psutil.Process().cpu_times()
        self._measure = tracker._do_measurements  # type: ignore[attr-defined]
        tracker._do_measurements = self  # type: ignore[attr-defined]

    def __call__(self) -> None:
        tracker = self.tracker
        started = tracker._last_measured_time  # type: ignore[attr-defined]
        self._measure()
        now = self.clock()
        machine, process = psutil.cpu_times(), psutil.Process().cpu_times()
        seconds = now - started
        if seconds >= SHORTEST_INTERVAL_S:  # CodeCarbon measures once at start(): an empty interval
            self.rows.append(
                {
                    "start_s": started - self.t0,
                    "end_s": now - self.t0,
                    "cpu_w": tracker._cpu_power.W,  # type: ignore[attr-defined]
                    "ram_w": tracker._ram_power.W,  # type: ignore[attr-defined]
                    "machine_pct": busy_pct(self._machine, machine),
                    "process_pct": 100
                    * (process.user + process.system - self._process.user - self._process.system)
                    / (seconds * self.cpus),
                }
            )
        self._machine, self._process = machine, process

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.rows, columns=["start_s", "end_s", "cpu_w", "ram_w", "machine_pct", "process_pct"]
        )


def busy_pct(before: object, after: object) -> float:
    """The whole machine's CPU load between two psutil.cpu_times() (all but idle and iowait), in %."""

    def busy(times: object) -> tuple[float, float]:
        total = sum(times)  # type: ignore[call-overload]
        return total - times.idle - getattr(times, "iowait", 0.0), total  # type: ignore[attr-defined]

    (busy0, total0), (busy1, total1) = busy(before), busy(after)
    return 100 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else math.nan


def stop_is_clear(last_measured: float, now: float | None = None, period: float = MEASURE_S) -> bool:
    """Half-way between two of CodeCarbon's measurements. Stopped at the moment its timer fires,
    CodeCarbon 3.3.2 can measure the last interval twice, once from the timer and once from stop(),
    and charge both (this bench's runs of 6.0 s, 6 of its 1-s periods, hit it)."""
    since = (time.perf_counter() if now is None else now) - last_measured
    return 0.3 * period <= since <= 0.7 * period


def overlaps(segments: pd.DataFrame) -> int:
    """Intervals that begin before the previous one ended: an interval measured (and charged) twice."""
    ends = segments["end_s"].shift()
    return int((segments["start_s"] < ends - 0.01).sum())


def _codecarbon(mode: str, seconds: float) -> Run:
    import codecarbon
    from codecarbon import OfflineEmissionsTracker

    from ecopipe.workloads.factory import build_workload

    workload = build_workload(job_config())
    workload.load()
    workload.fit()
    for batch in list(workload.batches())[:2]:  # the job's warm-up
        workload.predict(batch)
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",  # energy does not depend on it; offline needs one
        tracking_mode=mode,
        measure_power_secs=MEASURE_S,
        save_to_file=False,
        log_level="error",
        allow_multiple_runs=True,
    )
    intervals = Intervals(tracker, psutil.cpu_count() or 1)
    tracker.start()
    intervals.t0 = tracker._start_time  # type: ignore[attr-defined]
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or not stop_is_clear(tracker._last_measured_time):  # type: ignore[attr-defined]
        samples += workload.run_pass()[0].samples
    tracker.stop()
    data = tracker.final_emissions_data
    cpu = next(h for h in tracker._hardware if type(h).__name__ == "CPU")  # its TDP and thread count
    frame = intervals.frame()
    read = "machine_pct" if mode == "machine" else "process_pct"
    spans = frame["end_s"] - frame["start_s"]
    cpu_how, ram_how = CODECARBON_METHOD[mode]
    facts = {
        "tdp": cpu._tdp,
        "threads": cpu._cpu_count,
        "memory": data.ram_total_size,
        "ram_w": statistics.mode(frame["ram_w"]) if len(frame) else data.ram_power,
    }
    per_1k = 1000 / samples
    return Run(
        tool=codecarbon_label(mode, codecarbon.__version__),
        figures={
            "cpu_j": data.cpu_energy * JOULES_PER_KWH * per_1k,
            "ram_j": data.ram_energy * JOULES_PER_KWH * per_1k,
            "total_j": data.energy_consumed * JOULES_PER_KWH * per_1k,
        },
        window_s=data.duration,
        samples=samples,
        cpu_method=cpu_how.format(**facts),
        ram_method=ram_how.format(**facts),
        segments=frame[["start_s", "end_s", "cpu_w", "ram_w"]],
        load=pd.DataFrame({"t_s": (frame["start_s"] + frame["end_s"]) / 2, "pct": frame[read]}),
        machine_load_pct=float((frame["machine_pct"] * spans).sum() / spans.sum())
        if len(frame)
        else math.nan,
    )


STYLE = {  # tool -> (colour, dashed)
    ECOPIPE_DEFAULT: ("tab:blue", False),
    ECOPIPE_MACHINE_RAM: ("tab:cyan", True),
    "machine": ("tab:red", False),
    "process": ("tab:orange", True),
}


def _plot(runs: Mapping[str, Sequence[Run]], repeat: int, cc_version: str) -> Path:
    series = []
    for tool, rs in runs.items():
        run = rs[repeat]
        mode = next((m for m in ("machine", "process") if tool == codecarbon_label(m, cc_version)), None)
        colour, dashed = STYLE[mode or tool]
        if mode is None:
            load_label = f"{tool}: the job's process CPU (its sampler's trace, 0.5-s means)"
            load = run.load if tool == ECOPIPE_DEFAULT else pd.DataFrame()  # the same model reads the same
        else:
            load_label = (
                f"{tool}: {'the whole machine' if mode == 'machine' else 'its process'}, per measurement"
            )
            load = run.load
        series.append(PowerSeries(f"{tool}: an estimate", run.segments, load, load_label, colour, dashed))
    title = (
        f"Estimated power of the same workload, repeat {repeat + 1} of {len(next(iter(runs.values())))} "
        f"(the one nearest every tool's median)\n{machine()}, no RAPL, no GPU: "
        "every line is an estimate by a model, none is a measurement"
    )
    return plot_power(series, PLOT, title)


def run() -> pd.DataFrame:
    try:
        import codecarbon
    except ImportError:
        return pd.DataFrame()
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    cc = codecarbon.__version__
    order = [
        ECOPIPE_DEFAULT,
        codecarbon_label("machine", cc),
        ECOPIPE_MACHINE_RAM,
        codecarbon_label("process", cc),
    ]
    runs: dict[str, list[Run]] = {tool: [] for tool in order}
    load_before, dirty = os.getloadavg(), _git_state()  # the code this process imports: as it is now
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/compare.db"
        for repeat in range(REPEATS):
            print(f"codecarbon bench: repeat {repeat + 1} of {REPEATS}", flush=True)
            first = _ecopipe(uri, ECOPIPE_DEFAULT)
            runs[ECOPIPE_DEFAULT].append(first)
            runs[order[1]].append(_codecarbon("machine", first.window_s))
            second = _ecopipe(uri, ECOPIPE_MACHINE_RAM, "monitor.ram_estimate=machine")
            runs[ECOPIPE_MACHINE_RAM].append(second)
            runs[order[3]].append(_codecarbon("process", second.window_s))
    load_after = os.getloadavg()
    chosen = representative({tool: [r.figures["total_j"] for r in rs] for tool, rs in runs.items()})
    plot = _plot(runs, chosen, cc)
    frame = summarise(runs)
    commit = runs[ECOPIPE_DEFAULT][0].commit[:10] or "unknown"  # HEAD when the first job ran
    machine_loads = [
        r.machine_load_pct for rs in runs.values() for r in rs if not math.isnan(r.machine_load_pct)
    ]
    cc_runs = [r for tool, rs in runs.items() if tool.startswith("CodeCarbon") for r in rs]
    twice = sum(r.overlaps for r in cc_runs)
    frame.attrs["header"] = [
        f"Versions: ecopipe {importlib.metadata.version('ecopipe')} (commit {commit}{dirty}), "
        f"CodeCarbon {cc}",
        f"Repeats: n = {REPEATS} per tool, interleaved ({', '.join(order)}, then again)",
    ]
    frame.attrs["notes"] = [
        "Every figure is an estimate (no RAPL, no GPU here): the tools differ by their models, named "
        "beside them. Each CodeCarbon run lasts as long as the ecopipe run before it measured, with "
        "the same workload, built and warmed up the same way, CodeCarbon sampling every second, and is "
        "stopped half-way between two of its measurements (up to 1 s later): stopped as its timer fires, "
        "CodeCarbon 3.3.2 can measure its last interval twice and charge both. Intervals measured twice "
        f"all the same: {twice} in {len(cc_runs)} CodeCarbon runs.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in load_after)}. The whole machine's CPU load during CodeCarbon's "
        f"runs (what its machine mode reads): {spread(machine_loads) if machine_loads else 'unknown'} %.",
        f"Power over time, repeat {chosen + 1}: `{plot.relative_to(RESULTS.parent.parent).as_posix()}`.",
    ]
    return frame
