"""What the stages and workloads hand each other: typed results, and the words that label figures.

A leaf of the package: the inference stage builds these, workloads (a selection study's findings) and
the report read them, and neither needs the other's module for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from ecopipe.config import Attribution, Phase
from ecopipe.monitor.energy import Bound, Energy, Power, Window
from ecopipe.monitor.sampler import Trace
from ecopipe.monitor.settle import Settling
from ecopipe.monitor.stats import Band, Estimate, band_of, estimate

# What a job's figures are, by the sources of their energy: every word that describes a figure, in the
# summary, the tables, the plots and the selection, follows it.
MEASURED, ESTIMATE, SIMULATED = "measured", "ESTIMATE", "SIMULATED"
# Added to the label where the GPU is read by a counter of the whole physical GPU (the job held a MIG
# instance of it): "measured, WHOLE GPU", "ESTIMATE, WHOLE GPU".
WHOLE_GPU = ", WHOLE GPU"


@dataclass(frozen=True)
class PassStats:
    """One pass over the measured data."""

    samples: int
    tokens_in: int = 0
    tokens_out: int = 0
    batch_latencies_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModelFacts:
    parameters: int  # counted on the loaded model (fitted values for scikit-learn)
    effective_parameters: float  # taking part in one inference (active experts, expected cascade cost)
    dtype: str  # what the weights actually hold after precision was applied
    weights: str  # pretrained | random
    extra: dict[str, Any] = field(default_factory=dict)  # short facts, logged as ecopipe.workload.* tags
    # What a Hugging Face model's windows run (prefill: prompt tokens normalise); None: no such choice
    phase: Phase | None = None


@dataclass(frozen=True)
class Findings:
    """What a workload adds to its job's record once everything is measured."""

    metrics: dict[str, float] = field(default_factory=dict)
    summary: tuple[str, ...] = ()  # lines appended to the job's summary
    files: tuple[Path, ...] = ()  # written under the folder `findings` was given; logged as artifacts


class TrialsStop(StrEnum):
    """What ended the trials: their fixed number, the CI target (monitor.target_rel_ci), or the cap."""

    FIXED = "fixed"  # monitor.trials, no CI target
    TARGET = "target_rel_ci"
    MAX_TRIALS = "max_trials"  # the target was not reached within monitor.max_trials


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

    def per_1k_band(self) -> Band:
        """The same with its band (stats.band_of): an estimate's coefficient range and the CI."""
        per_bound = ([t.window.at(b).total * 1000 / t.samples for t in self.trials] for b in Bound)
        return band_of(*per_bound).floored(0.0)

    def seconds_per_1k_samples(self) -> Estimate:
        return estimate([t.window.duration_s * 1000 / t.samples for t in self.trials])


@dataclass(frozen=True)
class InferenceResult:
    device: str
    sources: dict[str, str]  # component -> nvml_counter | nvml_power_polling | rapl | estimated_specpower ...
    measured: dict[str, bool]  # component -> a measurement (True) or an estimate (False)
    methods: dict[str, str]  # component -> how its estimate is made (components with a model only)
    resolution_s: dict[str, float]  # component -> the coarsest refresh period of its sensors
    facts: ModelFacts
    load: Window
    fit: Window | None
    trials: tuple[TrialResult, ...]
    quality: dict[str, float]
    batch_latencies_s: tuple[float, ...] = field(repr=False)
    batch_size: int  # the largest batch that ran: batch_size, or the whole split where it is smaller
    trace: Trace | None = field(repr=False)
    arms: dict[str, ArmResult] = field(default_factory=dict)
    unmetered: dict[str, str] = field(default_factory=dict)  # component -> why the job's device has no sensor
    set_aside: dict[str, str] = field(default_factory=dict)  # component -> source set aside on request
    fallbacks: dict[str, str] = field(default_factory=dict)  # component -> the counter it could not read
    whole_gpu: dict[str, str] = field(default_factory=dict)  # component -> why it is the whole GPU (MIG)
    trials_stop: TrialsStop = TrialsStop.FIXED
    # Other processes' share of the machine's CPUs over the trials (/proc/stat less the job's own)
    other_cpu_load: float = float("nan")
    baseline: IdleBaseline | None = None  # the idle baseline and how it was taken; None: none was taken
    batch_size_asked: int | None = None  # the configured batch_size (batch_size is the batch that ran)

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
        if self.facts.phase is Phase.prefill:
            return self.tokens_in
        return self.tokens_out or self.tokens_in

    @property
    def duration_s(self) -> float:
        return sum(t.window.duration_s for t in self.trials)

    @property
    def shared(self) -> tuple[str, ...]:
        """Components read from a whole-machine counter and charged at the job's share (RAPL)."""
        return self.trials[0].window.shared if self.trials else ()

    @property
    def machine_energy(self) -> Energy:
        """The trials' gross energy with the shared components whole: what the machine drew."""
        return sum((t.window.machine or t.window.energy for t in self.trials), Energy())

    @property
    def job_cpu_share(self) -> float:
        """The job's share of the machine's busy CPU time over the trials (duration-weighted); nan
        where no counter was shared."""
        shared = [t.window for t in self.trials if t.window.job_share is not None]
        seconds = sum(w.duration_s for w in shared)
        return sum(w.job_share * w.duration_s for w in shared) / seconds if seconds else math.nan  # type: ignore[operator]

    @property
    def idle_window(self) -> Window | None:
        """The idle baseline's window (its power at each bound); None when none was taken."""
        return self.baseline.window if self.baseline is not None else None

    @property
    def idle_measured(self) -> bool:
        return self.baseline is not None

    def idle_power_at(self, bound: Bound = Bound.POINT) -> Power:
        """Baseline watts at a bound of the estimates' range; zero when no baseline was taken."""
        return self.idle_window.power_at(bound) if self.idle_window is not None else Power()

    @property
    def idle_power(self) -> Power:
        return self.idle_power_at(Bound.POINT)

    @property
    def estimated(self) -> list[str]:
        """The components that have a sensor, but an estimate, not a counter."""
        return [c for c, m in self.measured.items() if not m and self.sources.get(c, "none") != "none"]

    @property
    def is_estimate(self) -> bool:
        """Some component with a sensor is estimated: its figures are bands, never 'measured'."""
        return bool(self.estimated)

    @property
    def figures(self) -> str:
        """measured (every metered component measured), ESTIMATE (any estimated), SIMULATED (a fake GPU)."""
        if any("fake" in source for source in self.sources.values()):
            return SIMULATED
        return ESTIMATE if self.is_estimate else MEASURED

    @property
    def figures_label(self) -> str:
        """`figures`, with ", WHOLE GPU" where the GPU is read by its whole counter under MIG."""
        label = self.figures
        return label + WHOLE_GPU if self.whole_gpu and label != SIMULATED else label

    def run_energy(self, attribution: Attribution, bound: Bound = Bound.POINT) -> Energy:
        """Energy of all the measured windows, gross or less the idle baseline over their duration."""
        return sum((self.trial_energy(t, attribution, bound) for t in self.trials), Energy())

    @property
    def gross(self) -> Energy:
        return self.run_energy(Attribution.gross)

    @property
    def idle(self) -> Energy:
        """The idle baseline over the trials, charged as they were (a shared counter at the job's share)."""
        return sum((t.window.baseline(self.idle_power) for t in self.trials), Energy())

    @property
    def net(self) -> Energy:
        return self.run_energy(Attribution.net)

    @property
    def net_negative(self) -> bool:
        """The windows drew less than the idle baseline: net figures (and a net ESS) mean nothing."""
        return self.idle_measured and self.net.total < 0

    def trial_energy(
        self, trial: TrialResult, attribution: Attribution, bound: Bound = Bound.POINT
    ) -> Energy:
        gross = trial.window.at(bound)
        if attribution is Attribution.gross:
            return gross
        return gross - trial.window.baseline(self.idle_power_at(bound))

    def _per_1k(self, attribution: Attribution, bound: Bound) -> list[Energy]:
        return [self.trial_energy(t, attribution, bound) * (1000 / t.samples) for t in self.trials]

    def per_1k_samples(self, attribution: Attribution, bound: Bound = Bound.POINT) -> Estimate:
        """Joules per 1,000 inferences over the trials: mean and 95% interval."""
        return estimate([e.total for e in self._per_1k(attribution, bound)])

    def component_per_1k_samples(self, attribution: Attribution, bound: Bound = Bound.POINT) -> Energy:
        per_trial = self._per_1k(attribution, bound)
        return sum(per_trial, Energy()) / len(per_trial)

    def per_1k_bands(self, attribution: Attribution) -> dict[str, Band]:
        """Per component and total: joules per 1,000 inferences with the band to quote (stats.band_of)."""
        per_bound = {b: [e.as_dict() for e in self._per_1k(attribution, b)] for b in Bound}
        bands = {
            key: band_of(*([trial[key] for trial in per_bound[b]] for b in Bound))
            for key in per_bound[Bound.POINT][0]
        }
        if attribution is Attribution.gross:  # what the devices drew is never below zero; net may be
            bands = {key: band.floored(0.0) for key, band in bands.items()}
        return bands

    @property
    def throughput(self) -> Estimate:
        """Inferences per second over the trials."""
        return estimate([t.samples / t.window.duration_s for t in self.trials])

    def latency_s(self, q: float) -> float:
        return float(np.percentile(self.batch_latencies_s, q)) if self.batch_latencies_s else float("nan")


@dataclass(frozen=True)
class IdleBaseline:
    window: Window  # the machine's whole idle draw over the baseline
    settling: Settling | None  # the wait for power to settle before it; None: no wait asked
    # Other processes' share of the CPUs during the baseline: their draw is in it (busy.MachineLoad)
    other_cpu_load: float = math.nan
    reused: bool = False  # served from the cache: taken by an earlier job of this process
