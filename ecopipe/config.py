"""Typed schema of a job's configuration, registered in Hydra's ConfigStore.

Every YAML option of every group is merged into these dataclasses at composition time, so a
misspelt key or a wrong type fails before any work, with Hydra's message naming the key. Each numeric
field declares the Range it allows; the checks that a type cannot express (those ranges, a device
string, a task that fits the data set) live in ecopipe.config_checks, and run before the MLflow run
opens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ecopipe.monitor.settle import SETTLE_TOLERANCE
from ecopipe.sensors.base import GPU_SOURCES, Source


class Task(Enum):
    text_generation = "text_generation"
    image_classification = "image_classification"
    speech_recognition = "speech_recognition"
    sentence_embedding = "sentence_embedding"
    tabular_classification = "tabular_classification"
    tabular_regression = "tabular_regression"


class Framework(Enum):
    sklearn = "sklearn"
    transformers = "transformers"
    torch = "torch"


class Weights(Enum):
    pretrained = "pretrained"  # hub id, local cache or a local directory
    random = "random"  # the architecture from a config shipped with the project: energy and speed only


class DataKind(Enum):
    text = "text"
    image = "image"
    audio = "audio"
    tabular_classification = "tabular_classification"
    tabular_regression = "tabular_regression"


class DataSource(Enum):
    sklearn = "sklearn"  # data sets bundled with scikit-learn: offline
    synthetic = "synthetic"  # generated from a seed: offline
    huggingface = "huggingface"  # `datasets.load_dataset`, from the hub or its local cache


class Precision(Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"
    int4 = "int4"


class Engine(Enum):
    eager = "eager"  # plain `generate`
    compiled = "compiled"  # static KV cache + torch.compile, as transformers supports


class Phase(Enum):
    generate = "generate"  # prompt processing + `max_new_tokens` greedy tokens, as a user sees it
    prefill = "prefill"  # prompt processing + the first token only; decode = generate - prefill


class CascadeTarget(Enum):
    accuracy_parity = "accuracy_parity"  # cheapest thresholds within `tolerance` of the reference member
    energy_budget = "energy_budget"  # most accurate thresholds within `energy_budget_j_per_1k`


class GpuSensor(Enum):
    """Which NVML source meters the GPU: `polling` forced, e.g. to compare it with the counter."""

    auto = "auto"  # the energy counter, else instantaneous-power polling
    counter = "counter"  # the counter only: no GPU figure rather than a fallback
    polling = "polling"

    @property
    def sources(self) -> tuple[Source, ...]:
        forced = {"counter": (Source.NVML_COUNTER,), "polling": (Source.NVML_POWER_POLLING,)}
        return forced.get(self.value, GPU_SOURCES)


class RaplAttribution(Enum):
    """What a RAPL counter, which counts every process on the machine, charges the job."""

    job_share = "job_share"  # the job's CPU time over the machine's busy CPU time in each window
    whole_machine = "whole_machine"  # all of it: right only where nothing else runs


class RamEstimate(Enum):
    """What an estimated RAM figure charges the job for, where RAPL has no dram zone."""

    job = "job"  # the memory the job's processes hold (resident set) x W per GB
    machine = "machine"  # the machine's installed memory x W per GB: the whole machine's memory


class Attribution(Enum):
    gross = "gross"  # everything the devices drew in the window: idle power is a real cost
    net = "net"  # gross minus the idle baseline: what the workload added


# The offline data set standing in for each kind of hub data: what a model with random weights measures
# when no data set was named (random weights have no quality to measure, so real text buys nothing).
SYNTHETIC_OPTION = {
    DataKind.text: "synthetic_text",
    DataKind.image: "synthetic_images",
    DataKind.audio: "synthetic_audio",
}

# Which data kinds each task can consume; checked before anything is loaded.
TASK_DATA = {
    Task.text_generation: {DataKind.text},
    Task.sentence_embedding: {DataKind.text},
    Task.image_classification: {DataKind.image},
    Task.speech_recognition: {DataKind.audio},
    Task.tabular_classification: {DataKind.tabular_classification},
    Task.tabular_regression: {DataKind.tabular_regression},
}


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows. NaN and the infinities never pass: `value < 0` lets NaN through."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is excluded
    high_open: bool = False
    why: str = ""  # what the key is, when the bounds need a reason

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"more than {self.low:g}" if self.low_open else f"{self.low:g} or more")
        if self.high is not None:
            parts.append(f"less than {self.high:g}" if self.high_open else f"at most {self.high:g}")
        return " and ".join(parts) + (f" ({self.why})" if self.why else "")


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
SHARE = Range(0, 1, low_open=True, high_open=True)  # a fraction of the rows, neither none nor all
SEED = Range(0, 2**32 - 1, why="NumPy and scikit-learn take seeds below 2**32")
SECONDS = Range(0, 86_400, why="seconds")
# The sampler polls sensors that refresh every 1 to 100 ms: faster polling only costs CPU, and every
# sample is a row in the store.
SAMPLING_HZ = Range(0, 100, low_open=True, why="samples per second written to the store")
# Practical upper bounds: a finite typo (1e12 passes) must not become an endless or out-of-memory job.
TRIALS = Range(1, 1000, why="measured windows per job")
PASSES = Range(1, 10_000, why="passes over the data per window")
SAMPLES = Range(1, 10_000_000, why="samples held in memory")
TOKENS = Range(1, 131_072, why="tokens per prompt; longer than any model's context here")
GRID = Range(2, 10_000, why="thresholds tried per member")


def bounded(default: Any, allowed: Range) -> Any:
    """A numeric field with its allowed range, checked by `check_ranges` for every key in one place."""
    return field(default=default, metadata={"range": allowed})


@dataclass
class ModelConfig:
    name: str = MISSING
    task: Task = MISSING
    framework: Framework = MISSING
    architecture: str = MISSING  # estimator or transformers class name
    hf_id: str | None = None  # hub id or local directory of a save_pretrained model
    weights: Weights = Weights.pretrained
    params: dict[str, Any] = field(default_factory=dict)  # constructor arguments (estimators)
    max_new_tokens: int = bounded(32, TOKENS)  # text generation: tokens generated per prompt
    # mixture-of-experts: share of parameters one token uses
    active_params_fraction: float = bounded(1.0, Range(0, 1, low_open=True))
    phase: Phase = Phase.generate  # text generation: which part of generation the window measures
    # weights=random: architecture values set over ecopipe/model_configs/<name>.json (tests, what-if sizes)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # The workload family: None picks the package's by framework and task (workloads/factory.py); a
    # family of one's own is named by its class path, <module.Class>, a subclass of workloads.base.Workload
    _target_: str | None = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    kind: DataKind = MISSING
    source: DataSource = MISSING
    hf_id: str | None = None
    hf_config: str | None = None
    split: str = "test"
    limit: int | None = bounded(None, SAMPLES)  # samples in the measured pass; None takes the whole split
    seed: int = bounded(0, SEED)
    test_fraction: float = bounded(0.25, SHARE)  # tabular sets: share held out for inference
    # tokens per prompt: synthetic prompts have exactly this many, real text is cut to it
    seq_len: int = bounded(64, TOKENS)
    image_size: int = bounded(224, Range(1, 4096, why="pixels per side"))
    audio_seconds: float = bounded(5.0, Range(0, 600, low_open=True, why="seconds of audio per sample"))
    sampling_rate: int = bounded(16000, Range(1, 384_000, why="audio samples per second"))
    input_column: str | None = None  # huggingface sets: the text, image or audio column; None guesses
    label_column: str | None = None  # huggingface sets: class label or transcript; None guesses


@dataclass
class PrecisionConfig:
    name: Precision = Precision.fp32


@dataclass
class HardwareConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    profile: str | None = None  # a key of the hardware table (h100, t4...); None detects it
    tier: str | None = None  # overrides the profile's tier (datacenter, desktop, edge, mobile...)
    cpu_model: str | None = None  # replaces the detected CPU model string (what-if estimates, tests)
    cpu_microarch: str | None = None  # a key of cpu_identity.known_microarchs(); None detects it


@dataclass
class MonitorConfig:
    trials: int = bounded(3, TRIALS)  # the trials run, or with target_rel_ci the fewest
    # trials go on until the 95% CI's half-width is within this fraction of the mean (None: `trials`)
    target_rel_ci: float | None = bounded(None, Range(0, 1, low_open=True, why="a fraction of the mean"))
    max_trials: int = bounded(10, TRIALS)  # with target_rel_ci: the most trials run
    # sensors refresh every ~100 ms: shorter windows are noise
    min_window_s: float = bounded(2.0, SECONDS)
    min_iterations: int = bounded(1, PASSES)  # passes over the data per trial, at least
    warmup_batches: int = bounded(2, Range(0, 10_000, why="batches"))
    idle_s: float = bounded(2.0, SECONDS)  # idle baseline length; 0 disables it
    cooldown_s: float = bounded(0.0, SECONDS)
    min_hz: float = bounded(1.0, SAMPLING_HZ)
    max_hz: float = bounded(10.0, SAMPLING_HZ)  # ~10 samples/s: the sampler within 1% of a core
    frequency_hz: float | None = bounded(None, SAMPLING_HZ)  # pins the sampler's rate
    fake_gpu_watts: float | None = bounded(
        None, Range(0, 5000, why="watts of one simulated GPU")
    )  # CI only: a simulated GPU drawing this power
    gpu_sensor: GpuSensor = GpuSensor.auto
    ram_estimate: RamEstimate = RamEstimate.job  # without RAPL dram: charge held or installed memory
    # false: readable RAPL is set aside and CPU and RAM are estimated (an estimate beside the counter)
    rapl: bool = True
    rapl_attribution: RaplAttribution = RaplAttribution.job_share
    # Before the idle baseline: wait until power is flat within settle_tolerance, at most settle_max_s
    settle_max_s: float = bounded(30.0, SECONDS)
    settle_tolerance: float = bounded(
        SETTLE_TOLERANCE, Range(0, 1, low_open=True, why="a fraction of the mean power")
    )
    allow_shared_cpu: bool = False  # SLURM and joblib jobs may share a node's CPUs (warned)


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str = "ecopipe"
    # Where a new experiment's artifacts go. None: beside a SQLite file (mlartifacts/), or where a tracking
    # server puts them; a database store (postgresql://, mysql://) needs it: a folder every job can reach
    # (file:///shared/mlartifacts) or an object store (s3://bucket/path).
    artifact_location: str | None = None
    # A RUNNING run whose process this machine cannot see (another host's, a container's) is marked
    # FAILED only after this many hours; None: never (a job may run for days).
    reap_after_h: float | None = bounded(None, Range(0, 24 * 365, why="hours a run may have been running"))


@dataclass
class ImpactConfig:
    # gCO2e/kWh; overrides the region's. Physical bounds: no grid or plant emits 2,000 (coal ~1,000)
    carbon_intensity: float | None = bounded(
        None, Range(0, 2000, why="gCO2e per kWh; coal, the most carbon-intensive source, is about 1,000")
    )
    pue: float | None = bounded(None, Range(1, 5, why="facility energy over IT energy; surveys average ~1.6"))
    wue: float | None = bounded(None, Range(0, 20, why="on-site litres per kWh of IT energy"))
    ewif: float | None = bounded(None, Range(0, 1000, why="litres per kWh of electricity generated"))
    attribution: Attribution = Attribution.gross
    embodied: bool = False
    # required when embodied is on: no default is sourced
    lifetime_years: float | None = bounded(None, Range(0, 50, low_open=True, why="years of hardware service"))


SINGLE = "single"  # strategy.name of a job that runs its model alone


@dataclass
class StrategyConfig:
    """How a job picks pool members per input (DESIGN.md section 9); `single` runs `model` alone."""

    # Cascade presets, named for what they trade: the accuracy (points, on validation B) each gives
    # up against the reference member in exchange for energy. `tolerance` set by hand replaces them.
    PRESETS: ClassVar[dict[str, float]] = {"energy_saver": 0.03, "balanced": 0.01, "accuracy_first": 0.0025}

    # single: the job's model alone; else a selection strategy (ecopipe/selection/strategies/): cascade,
    # router, oracle, or one of the user's, named by its class path in `_target_`
    name: str = SINGLE
    _target_: str | None = None
    preset: str | None = None  # energy_saver | balanced | accuracy_first (cascade, accuracy_parity)
    target: CascadeTarget = CascadeTarget.accuracy_parity
    # accuracy points below the reference member; None: the preset's
    tolerance: float | None = bounded(None, Range(0, 1, high_open=True))
    # target=energy_budget: joules per 1,000 inferences
    energy_budget_j_per_1k: float | None = bounded(None, POSITIVE)
    threshold_grid: int = bounded(21, GRID)  # thresholds tried per member for tuning and the Pareto curve

    def resolved_tolerance(self) -> float:
        """The parity tolerance in force: the explicit one, else the preset's (balanced by default)."""
        if self.preset is not None and self.preset not in self.PRESETS:
            allowed = ", ".join(self.PRESETS)
            raise ConfigError(f"strategy.preset={self.preset} is unknown; allowed: {allowed}.")
        if self.tolerance is not None and self.preset is not None:
            raise ConfigError(
                f"strategy.preset={self.preset} and strategy.tolerance={self.tolerance} are both set: a "
                f"preset is a tolerance ({self.preset} = {self.PRESETS[self.preset]}); set one of them."
            )
        if self.tolerance is not None:
            return self.tolerance
        return self.PRESETS[self.preset or "balanced"]

    @property
    def selects(self) -> bool:
        """Whether the job picks among a pool's members rather than running `model` alone."""
        return self.name != SINGLE


@dataclass
class PoolConfig:
    """An ordered set of models for a selection strategy; ordered by measured energy, not list order."""

    name: str = "none"
    members: list[str] = field(default_factory=list)  # conf/model option names, any order
    dataset: str | None = None  # digits (scikit-learn, offline) | fashion_mnist (Hugging Face datasets)
    hf_id: str | None = None  # hub id of a Hugging Face pool data set
    # stratified cap on the rows drawn before splitting; None: all
    max_samples: int | None = bounded(None, SAMPLES)
    validation_a_fraction: float = bounded(0.15, SHARE)  # router fit and temperature scaling
    validation_b_fraction: float = bounded(0.15, SHARE)  # threshold tuning
    test_fraction: float = bounded(0.25, SHARE)  # the measured, reported split
    # window measuring each member's energy per sample (>= 1 s on a GPU)
    cost_window_s: float = bounded(1.0, Range(0, 3600, low_open=True, why="seconds"))


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    precision: PrecisionConfig = MISSING
    hardware: HardwareConfig = MISSING
    monitor: MonitorConfig = MISSING
    tracking: TrackingConfig = MISSING
    impact: ImpactConfig = field(default_factory=ImpactConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    engine: Engine = Engine.eager
    region: str = "WORLD"  # grid zone: WORLD, FRA, FR, US-CA, aws/us-east-1...
    batch_size: int = bounded(64, Range(1, 1_000_000, why="inferences per batch"))
    seed: int = bounded(0, SEED)
    rerun: bool = False  # re-measure jobs whose config already has a FINISHED run (resume skips them)
    rerun_other_version: bool = False  # re-measure those only where another code version measured them
    # Sweeps over model x dataset: skip the pairs whose task and data do not fit instead of failing them.
    skip_mismatched: bool = False


def register_configs() -> None:
    ConfigStore.instance().store(name="ecopipe_schema", node=Config)


class ConfigError(ValueError):
    """Bad input, reported as one paragraph before any expensive work."""


class DataMismatchError(ConfigError):
    """The data set does not fit the model's task: a grid sweep may skip such a pair (skip_mismatched)."""


def _config_dir() -> Path:
    # A wheel ships conf/ inside the package (pyproject maps ecopipe.conf -> conf); a checkout or an
    # editable install reads the top-level conf/ directly.
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if (packaged / "config.yaml").exists() else Path(__file__).resolve().parents[1] / "conf"


CONFIG_DIR = _config_dir()
