"""The measured inference stage: load, warm-up, idle baseline, then repeated measured windows.

The protocol is DESIGN.md section 4: loading is metered apart from inference; the idle baseline is
taken in the workload's own state (model loaded, CUDA context open) and cached for the sweep; each
trial is extended until it lasts `monitor.min_window_s`, so microsecond predictions still span many
sensor refreshes; the accelerator is synchronised at both edges of every window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ecopipe.config import Attribution, MonitorConfig
from ecopipe.monitor.energy import Energy, EnergyMeter, Power, Snapshot, Window
from ecopipe.monitor.sampler import PowerSampler, Trace
from ecopipe.monitor.stats import Estimate, estimate
from ecopipe.stages.progress import JobProgress
from ecopipe.workloads.base import ModelFacts, PassStats, Workload

log = logging.getLogger(__name__)

# A window shorter than this many sensor refreshes is dominated by quantisation (DESIGN.md section 4).
SHORTEST_WINDOW_REFRESHES = 10

# Idle power per (sensors, device state with the model and precision), kept for a sweep's process:
# another model or precision holds other memory and clocks, so it gets its own baseline.
_IDLE_CACHE: dict[tuple[str, ...], Power] = {}


@dataclass(frozen=True)
class TrialResult:
    window: Window
    passes: int
    samples: int
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class ArmResult:
    """An alternative the workload named (`Workload.arms`), measured in the same trials' protocol."""

    trials: tuple[TrialResult, ...]
    quality: dict[str, float]

    def per_1k_samples(self) -> Estimate:
        """Gross joules per 1,000 inferences over the trials: mean and 95% interval."""
        return estimate([t.window.energy.total * 1000 / t.samples for t in self.trials])

    def seconds_per_1k_samples(self) -> Estimate:
        return estimate([t.window.duration_s * 1000 / t.samples for t in self.trials])


@dataclass(frozen=True)
class InferenceResult:
    device: str
    sources: dict[str, str]  # component -> nvml_counter | nvml_power_polling | rapl | estimated_tdp ...
    measured: dict[str, bool]  # component -> a measurement (True) or an estimate (False)
    methods: dict[str, str]  # component -> how its estimate is made (components with a model only)
    resolution_s: dict[str, float]  # component -> the coarsest refresh period of its sensors
    facts: ModelFacts
    load: Window
    fit: Window | None
    idle_power: Power  # watts; zero when no baseline was taken
    idle_measured: bool
    trials: tuple[TrialResult, ...]
    quality: dict[str, float]
    batch_latencies_s: tuple[float, ...] = field(repr=False)
    batch_size: int
    trace: Trace | None = field(repr=False)
    arms: dict[str, ArmResult] = field(default_factory=dict)
    unmetered: dict[str, str] = field(default_factory=dict)  # component -> why the job's device has no sensor
    set_aside: dict[str, str] = field(default_factory=dict)  # component -> source set aside on request

    # Whole-run sums over the measured windows.
    @property
    def samples(self) -> int:
        return sum(t.samples for t in self.trials)

    @property
    def tokens_in(self) -> int:
        return sum(t.tokens_in for t in self.trials)

    @property
    def tokens_out(self) -> int:
        return sum(t.tokens_out for t in self.trials)

    @property
    def tokens(self) -> int:
        """The tokens energy is normalised by: generated ones where the model generates, prompt tokens
        for a prefill-only window or an encoder; 0 for families without tokens."""
        if self.facts.extra.get("phase") == "prefill":
            return self.tokens_in
        return self.tokens_out or self.tokens_in

    @property
    def duration_s(self) -> float:
        return sum(t.window.duration_s for t in self.trials)

    @property
    def gross(self) -> Energy:
        return sum((t.window.energy for t in self.trials), Energy())

    @property
    def idle(self) -> Energy:
        return self.idle_power * self.duration_s

    @property
    def net(self) -> Energy:
        return self.gross - self.idle

    @property
    def net_negative(self) -> bool:
        """The windows drew less than the idle baseline: net figures (and a net ESS) mean nothing."""
        return self.idle_measured and self.net.total < 0

    def trial_energy(self, trial: TrialResult, attribution: Attribution) -> Energy:
        gross = trial.window.energy
        if attribution is Attribution.gross:
            return gross
        return gross - self.idle_power * trial.window.duration_s

    def per_1k_samples(self, attribution: Attribution) -> Estimate:
        """Joules per 1,000 inferences over the trials: mean and 95% interval."""
        return estimate([self.trial_energy(t, attribution).total * 1000 / t.samples for t in self.trials])

    def component_per_1k_samples(self, attribution: Attribution) -> Energy:
        per_trial = [self.trial_energy(t, attribution) * (1000 / t.samples) for t in self.trials]
        return sum(per_trial, Energy()) / len(per_trial)

    @property
    def throughput(self) -> Estimate:
        """Inferences per second over the trials."""
        return estimate([t.samples / t.window.duration_s for t in self.trials])

    def latency_s(self, q: float) -> float:
        return float(np.percentile(self.batch_latencies_s, q)) if self.batch_latencies_s else float("nan")


def trial_metrics(trial: TrialResult) -> dict[str, float]:
    """One trial's figures, logged with the trial index as the MLflow step.

    The wall-clock edges let another process's readings (an independent NVML counter trace) be
    compared with the job's over exactly the same window.
    """
    return {
        "trial_energy_j": trial.window.energy.total,
        **{f"trial_energy_j.{k}": v for k, v in trial.window.energy.as_dict().items() if k != "total"},
        "trial_window_s": trial.window.duration_s,
        "trial_start_unix_s": trial.window.start_unix_s,
        "trial_end_unix_s": trial.window.end_unix_s,
        "trial_samples": trial.samples,
        "trial_energy_per_1k_j": trial.window.energy.total * 1000 / trial.samples,
    }


def measure_idle(
    meter: EnergyMeter, seconds: float, state: str, sleep: Callable[[float], None] = time.sleep
) -> Power | None:
    """Baseline power in the workload's state; None when disabled."""
    if seconds <= 0:
        return None
    key = (state, *sorted(s.label for s in meter.sensors))
    if key not in _IDLE_CACHE:
        start = meter.snapshot()
        sleep(seconds)
        _IDLE_CACHE[key] = meter.since(start).power
        log.info("idle baseline (%s): %.1f W", state, _IDLE_CACHE[key].total)
    return _IDLE_CACHE[key]


def _metered(meter: EnergyMeter, action: Callable[[], object]) -> tuple[Window, object]:
    start = meter.snapshot()
    value = action()
    return meter.since(start), value


def _trial(
    meter: EnergyMeter, workload: Workload, monitor: MonitorConfig, index: int
) -> tuple[TrialResult, list[PassStats], list[object]]:
    passes: list[PassStats] = []
    outputs: list[object] = []
    start: Snapshot = meter.snapshot()
    while True:
        stats, pass_outputs = workload.run_pass(keep_outputs=index == 0 and not passes)
        passes.append(stats)
        outputs.extend(pass_outputs)
        elapsed = meter.clock() - start.time_s
        if len(passes) >= monitor.min_iterations and elapsed >= monitor.min_window_s:
            break
    window = meter.since(start)
    trial = TrialResult(
        window=window,
        passes=len(passes),
        samples=sum(p.samples for p in passes),
        tokens_in=sum(p.tokens_in for p in passes),
        tokens_out=sum(p.tokens_out for p in passes),
    )
    return trial, passes, outputs


def _load_and_warm_up(
    workload: Workload,
    meter: EnergyMeter,
    monitor: MonitorConfig,
    record: Callable[[dict[str, float], int], object],
    progress: JobProgress,
) -> tuple[Window, Window | None, Mapping[str, Workload]]:
    """Load and fit, each metered and recorded at once, then the warm-up of the workload and its arms:
    the steps before any measured window, while the progress line shows the time they take."""
    with progress.ticking():
        load, _ = _metered(meter, workload.load)
        fit_window, fitted = _metered(meter, workload.fit)
        fit = fit_window if fitted else None
        record({"load_s": load.duration_s, "load_energy_j": load.energy.total}, 0)
        if fit is not None:
            record({"fit_s": fit.duration_s, "fit_energy_j": fit.energy.total}, 0)

        # Warm up first, so the baseline sees the state the windows run in (allocator, kernels, clocks).
        progress.describe("warming up")
        arms = workload.arms()
        progress.arms = len(arms)
        for warmed in (workload, *arms.values()):
            for batch in list(warmed.batches())[: monitor.warmup_batches]:
                warmed.predict(batch)
        workload.synchronize()
    return load, fit, arms


def run_inference(
    workload: Workload,
    meter: EnergyMeter,
    monitor: MonitorConfig,
    batch_size: int,
    gpu_indices: Sequence[int] = (),
    sleep: Callable[[float], None] = time.sleep,
    record: Callable[[dict[str, float], int], object] = lambda metrics, step: None,
    idle_key: str = "",
) -> InferenceResult:
    """Run the whole protocol; the meter's sensors must already be open.

    `record(metrics, step)` receives each phase's figures as soon as they are measured (the job logs
    them to MLflow), so a failure later in the stage loses nothing that was already measured.
    `idle_key` (model and precision) keys the cached idle baseline.
    """
    coarsest = max(meter.resolution_s.values(), default=0.0)
    for key in ("idle_s", "min_window_s"):
        if 0 < getattr(monitor, key) < SHORTEST_WINDOW_REFRESHES * coarsest:
            log.warning(
                "monitor.%s=%s spans fewer than %d refreshes of a %.3g-s sensor: expect large errors.",
                key,
                getattr(monitor, key),
                SHORTEST_WINDOW_REFRESHES,
                coarsest,
            )
    workload.attach_meter(meter)
    with JobProgress(monitor.trials, monitor.min_window_s) as progress:
        load, fit, arms = _load_and_warm_up(workload, meter, monitor, record, progress)
        # The sampler runs through the baseline too: a counter (RAPL, NVML) cannot leave its draw out, so
        # both sides of net carry it; estimates leave its process out (PowerSampler.start).
        sampler = PowerSampler(
            meter.sensors, gpu_indices, monitor.min_hz, monitor.max_hz, monitor.frequency_hz
        )
        trials: list[TrialResult] = []
        latencies: list[float] = []
        quality_outputs: list[object] = []
        arm_trials: dict[str, list[TrialResult]] = {name: [] for name in arms}
        arm_outputs: dict[str, list[object]] = {name: [] for name in arms}
        sampler.start()
        try:
            progress.next_phase(f"idle baseline ({monitor.idle_s:g} s)")
            idle = measure_idle(meter, monitor.idle_s, f"{workload.device}:{idle_key}:model_loaded", sleep)
            if idle is not None:
                record({f"idle_power_w.{k}": v for k, v in idle.as_dict().items()}, 0)
            for index in range(monitor.trials):
                progress.trial(index)
                if index and monitor.cooldown_s:
                    sleep(monitor.cooldown_s)
                trial, passes, outputs = _trial(meter, workload, monitor, index)
                trials.append(trial)
                record(trial_metrics(trial), index)
                latencies.extend(lat for p in passes for lat in p.batch_latencies_s)
                quality_outputs.extend(outputs)
                log.info(
                    "trial %d: %.2f s, %d samples, %.3f J",
                    index + 1,
                    trial.window.duration_s,
                    trial.samples,
                    trial.window.energy.total,
                )
                # Arms interleave with the workload's trials (order rotated), so drift hits all alike.
                names = list(arms)
                for name in names[index % len(names) :] + names[: index % len(names)] if names else []:
                    arm_trial, _, outputs = _trial(meter, arms[name], monitor, index)
                    arm_trials[name].append(arm_trial)
                    arm_outputs[name].extend(outputs)
        finally:
            trace = sampler.stop()

    facts = workload.facts()
    quality = workload.quality(quality_outputs) if facts.weights != "random" else {}
    result = InferenceResult(
        device=workload.device,
        sources=meter.sources,
        resolution_s=meter.resolution_s,
        measured=meter.measured,
        methods=meter.methods,
        unmetered=meter.unmetered,
        set_aside=meter.set_aside,
        facts=facts,
        load=load,
        fit=fit,
        idle_power=idle if idle is not None else Power(),
        idle_measured=idle is not None,
        trials=tuple(trials),
        quality=quality,
        batch_latencies_s=tuple(latencies),
        batch_size=batch_size,
        trace=trace,
        arms={
            name: ArmResult(tuple(arm_trials[name]), arm.quality(arm_outputs[name]))
            for name, arm in arms.items()
        },
    )
    if result.net_negative:
        log.warning(
            "net energy is NEGATIVE (%.4g J): the windows drew less than the idle baseline (%.3g W), so "
            "net figures and a net ESS are not defined; tagged ecopipe.net_negative=true. A baseline "
            "taken while something else ran, or a noisy sensor over short windows, does this.",
            result.net.total,
            result.idle_power.total,
        )
    return result
