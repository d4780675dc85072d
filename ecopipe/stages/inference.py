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
from dataclasses import replace

from ecopipe import names
from ecopipe.config import MonitorConfig
from ecopipe.monitor.busy import MachineLoad
from ecopipe.monitor.energy import EnergyMeter, Snapshot, Window
from ecopipe.monitor.sampler import PowerSampler, with_estimated_power
from ecopipe.monitor.settle import SETTLE_TOLERANCE, SETTLE_WINDOWS, settle, window_for
from ecopipe.monitor.stats import estimate
from ecopipe.names import Metric
from ecopipe.results import ArmResult, IdleBaseline, InferenceResult, PassStats, TrialResult, TrialsStop
from ecopipe.stages.progress import JobProgress
from ecopipe.workloads.base import ComparesArms, Workload

log = logging.getLogger(__name__)

# A window shorter than this many sensor refreshes is dominated by quantisation (DESIGN.md section 4).
SHORTEST_WINDOW_REFRESHES = 10

# The idle window per (sensors, device state with the model and precision), kept for a sweep's process:
# another model or precision holds other memory and clocks, so it gets its own baseline.
_IDLE_CACHE: dict[tuple[str, ...], IdleBaseline] = {}


def trial_metrics(trial: TrialResult) -> dict[str, float]:
    """One trial's figures, logged with the trial index as the MLflow step.

    The wall-clock edges let another process's readings (an independent NVML counter trace) be
    compared with the job's over exactly the same window.
    """
    window = trial.window
    metrics = {
        Metric.TRIAL_ENERGY: window.energy.total,
        **{
            names.component(Metric.TRIAL_ENERGY, k): v
            for k, v in window.energy.as_dict().items()
            if k != names.TOTAL
        },
        Metric.TRIAL_WINDOW_S: window.duration_s,
        Metric.TRIAL_START: window.start_unix_s,
        Metric.TRIAL_END: window.end_unix_s,
        Metric.TRIAL_SAMPLES: trial.samples,
        Metric.TRIAL_ENERGY_PER_1K: window.energy.total * 1000 / trial.samples,
    }
    if window.job_share is not None and window.machine is not None:  # a shared counter: the whole beside it
        whole = window.machine.as_dict()
        metrics |= {Metric.TRIAL_JOB_CPU_SHARE: window.job_share}
        metrics |= {names.component(names.TRIAL_MACHINE_ENERGY, c): whole[c] for c in window.shared}
    return metrics


def measure_idle(
    meter: EnergyMeter,
    seconds: float,
    state: str,
    sleep: Callable[[float], None] = time.sleep,
    settle_max_s: float = 0.0,
    settle_tolerance: float = SETTLE_TOLERANCE,
) -> IdleBaseline | None:
    """The baseline in the workload's state, after power has settled (at most `settle_max_s`); None
    when disabled. A sweep's process takes it once per state and sensors, and reuses it."""
    if seconds <= 0:
        return None
    key = (state, *sorted(s.label for s in meter.sensors))
    if key in _IDLE_CACHE:
        return replace(_IDLE_CACHE[key], reused=True)
    settling = None
    if settle_max_s > 0:
        window_s = window_for(max(meter.resolution_s.values(), default=0.0))
        if settle_max_s < SETTLE_WINDOWS * window_s:
            log.warning(
                "monitor.settle_max_s=%g is shorter than the %d settle windows of %g s this meter needs: "
                "power cannot be seen to settle.",
                settle_max_s,
                SETTLE_WINDOWS,
                window_s,
            )
        settling = settle(
            lambda: sum(meter.snapshot().joules),
            window_s,
            settle_max_s,
            sleep,
            meter.clock,
            settle_tolerance,
        )
        log.info("idle baseline (%s): %s", state, settling.describe())
    others = MachineLoad()
    others.start()
    start = meter.snapshot()
    sleep(seconds)
    # The machine's whole idle draw: each trial is charged it at that trial's share (Window.baseline).
    window = meter.between(start, meter.snapshot(), attribute=False)
    _IDLE_CACHE[key] = IdleBaseline(window, settling, others.stop())
    log.info("idle baseline (%s): %.1f W", state, window.power.total)
    return _IDLE_CACHE[key]


def _target_reached(trials: Sequence[TrialResult], monitor: MonitorConfig) -> bool:
    """The 95% CI of gross joules per 1,000 inferences is within monitor.target_rel_ci of its mean."""
    if monitor.target_rel_ci is None or len(trials) < max(monitor.trials, 2):
        return False
    e = estimate([t.window.energy.total * 1000 / t.samples for t in trials])
    return e.mean > 0 and e.ci95 <= monitor.target_rel_ci * e.mean


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
        if workload.fits_in_job:
            progress.describe("fitting the model")
        fit_window, fitted = _metered(meter, workload.fit)
        fit = fit_window if fitted else None
        record({Metric.LOAD_S: load.duration_s, Metric.LOAD_ENERGY: load.energy.total}, 0)
        if fit is not None:
            record({Metric.FIT_S: fit.duration_s, Metric.FIT_ENERGY: fit.energy.total}, 0)

        # Warm up first, so the baseline sees the state the windows run in (allocator, kernels, clocks).
        arms = workload.arms() if isinstance(workload, ComparesArms) else {}
        progress.arms = len(arms)
        beside = f" and the {len(arms)} arms measured beside it" if arms else ""
        batches = f"{monitor.warmup_batches} batch{'' if monitor.warmup_batches == 1 else 'es'}"
        progress.describe(f"warming up the model{beside}: {batches} each")
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
    if isinstance(workload, ComparesArms):
        workload.attach_meter(meter)
    adaptive = monitor.target_rel_ci is not None
    most = max(monitor.max_trials, monitor.trials) if adaptive else monitor.trials
    with JobProgress(most, monitor.min_window_s, adaptive=adaptive) as progress:
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
        stop = TrialsStop.MAX_TRIALS if adaptive else TrialsStop.FIXED
        load_of_others = MachineLoad()
        sampler.start()
        try:
            progress.next_phase(f"idle baseline ({monitor.idle_s:g} s)")
            baseline = measure_idle(
                meter,
                monitor.idle_s,
                f"{workload.device}:{idle_key}:model_loaded",
                sleep,
                monitor.settle_max_s,
                monitor.settle_tolerance,
            )
            idle = baseline.window if baseline is not None else None
            if idle is not None:
                record({names.component(names.IDLE_POWER, k): v for k, v in idle.power.as_dict().items()}, 0)
            load_of_others.start()
            for index in range(most):
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
                order = list(arms)
                for name in order[index % len(order) :] + order[: index % len(order)] if order else []:
                    progress.describe(f"trial {index + 1}: arm {name}")
                    arm_trial, _, outputs = _trial(meter, arms[name], monitor, index)
                    arm_trials[name].append(arm_trial)
                    arm_outputs[name].extend(outputs)
                if _target_reached(trials, monitor):
                    stop = TrialsStop.TARGET
                    break
            other_cpu_load = load_of_others.stop()
        finally:
            trace = sampler.stop()

    trace = with_estimated_power(trace, meter.sensors)
    facts = workload.facts()
    quality = workload.quality(quality_outputs) if facts.weights != "random" else {}
    # A batch_size beyond the data runs all of it as one batch: report the batch that really ran.
    held = sum(workload.batch_samples(b) for b in workload.batches())
    if 0 < held < batch_size:
        log.warning(
            "batch_size=%d is larger than the data's %d samples: they ran as one batch of %d, reported as "
            "the batch size.",
            batch_size,
            held,
            held,
        )
    result = InferenceResult(
        device=workload.device,
        sources=meter.sources,
        resolution_s=meter.resolution_s,
        measured=meter.measured,
        methods=meter.methods,
        unmetered=meter.unmetered,
        set_aside=meter.set_aside,
        fallbacks=meter.fallbacks,
        whole_gpu=meter.whole_gpu,
        facts=facts,
        load=load,
        fit=fit,
        baseline=baseline,
        trials=tuple(trials),
        quality=quality,
        batch_latencies_s=tuple(latencies),
        batch_size=min(batch_size, held) if held else batch_size,
        batch_size_asked=batch_size,
        trace=trace,
        arms={
            name: ArmResult(tuple(arm_trials[name]), arm.quality(arm_outputs[name]))
            for name, arm in arms.items()
        },
        trials_stop=stop,
        other_cpu_load=other_cpu_load,
    )
    if stop is TrialsStop.MAX_TRIALS:
        log.warning(
            "the 95%% CI did not come within monitor.target_rel_ci=%g of the mean in %d trials "
            "(monitor.max_trials): the figures carry the wider CI.",
            monitor.target_rel_ci,
            len(trials),
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
