"""What every step of the GPU check shares: the shape of the run, where it writes, how it runs a job,
and a result that is saved after every figure, so that a step stopped at its limit keeps what it did."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP_EXPERIMENT = "gpu-check-sweep"


@dataclass(frozen=True)
class Shape:
    """Models, windows and batches of one run of the check."""

    name: str
    device: str  # hardware.device of every job
    fake_gpu_watts: float | None  # the CPU rehearsal's simulated GPU; None on a real one
    overrides: tuple[str, ...]  # shared by every job: data, window lengths, shrinking on the CPU
    counter_overrides: tuple[str, ...]  # the counter check: >= 3 trials of >= 5 s on a GPU
    float_precision: str  # counter check, headline and engines: fp16 on a GPU, fp32 on the CPU
    batches: tuple[int, ...]
    idle_window_s: float  # one reading of the idle settle
    idle_max_s: float  # the longest the idle step waits for power to settle, with and without a context
    # The same models in both shapes (the CPU rehearsal shrinks them with `overrides`).
    counter_model: str = "opt-1.3b"
    small: str = "opt-125m"  # headline and precisions
    engines_model: str = "opt-350m"
    sweep_models: str = "opt-125m,opt-350m"
    sweep_precisions: str = "fp32,bf16"  # both run on a GPU and on a CPU: the same grid on each
    simulated_profile: str = "h100"  # the hardware the rehearsal's runs are labelled with (SIMULATED)


GPU = Shape(
    name="gpu",
    device="cuda",
    fake_gpu_watts=None,
    overrides=(
        "dataset.limit=8",
        "dataset.seq_len=64",
        "model.max_new_tokens=32",
        "monitor.trials=2",
        "monitor.min_window_s=2",
        "monitor.idle_s=2",
    ),
    counter_overrides=("batch_size=8", "monitor.trials=3", "monitor.min_window_s=5"),
    float_precision="fp16",
    batches=(1, 8),
    idle_window_s=1.0,
    idle_max_s=8.0,
)
# Every OPT architecture shrunk alike: the rehearsal checks the script's plumbing, not the models.
_SHRINK = "+model.config_overrides={hidden_size:128,num_hidden_layers:1,num_attention_heads:2,ffn_dim:256,word_embed_proj_dim:128}"  # noqa: E501
CPU = Shape(
    name="cpu",
    device="cpu",
    fake_gpu_watts=300.0,
    overrides=(
        _SHRINK,
        "dataset.limit=2",
        "dataset.seq_len=8",
        "model.max_new_tokens=4",
        "monitor=quick",
        "monitor.trials=2",
        "monitor.min_window_s=0.1",
        "monitor.idle_s=0.1",
        "monitor.warmup_batches=1",
    ),
    counter_overrides=("batch_size=2", "monitor.trials=3", "monitor.min_window_s=0.3"),
    float_precision="fp32",
    batches=(1,),  # one shape to compile: torch.compile takes ~20 s per shape on 2 CPU cores
    idle_window_s=0.1,
    idle_max_s=1.0,
)
SHAPES = {shape.name: shape for shape in (GPU, CPU)}


@dataclass
class Figure:
    name: str
    value: float | str
    unit: str = ""
    command: str = ""


@dataclass
class StepResult:
    """Figures, notes and failed parts of one step, written to `path` (JSON) whenever one is added."""

    path: Path | None = None
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # parts that failed; the step fails if any
    skipped: str = ""  # why the step had nothing to do on this machine (not a failure)

    def figure(self, name: str, value: float | str, unit: str = "", command: str = "") -> None:
        self.figures.append(Figure(name, value, unit, command))
        self.save()

    def note(self, text: str) -> None:
        self.notes.append(" ".join(text.split()))  # one line, whatever the error looked like
        self.save()

    def fail(self, part: str, why: str) -> None:
        self.failures.append(part)
        self.note(f"{part}: {why}")

    def skip(self, why: str) -> None:
        self.skipped = why
        self.save()

    def as_dict(self) -> dict:
        return {
            "figures": [vars(f) for f in self.figures],
            "notes": self.notes,
            "failures": self.failures,
            "skipped": self.skipped,
        }

    def save(self) -> None:
        if self.path is not None:
            replace_file(self.path, json.dumps(self.as_dict(), default=str))


def replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` whole: a reader, or a call cut off mid-write, never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


@dataclass(frozen=True)
class Context:
    shape: Shape
    work: Path  # scratch: the sweep's Hydra folder
    out: Path  # returned: the MLflow store and the counter traces
    nvml_index: int | None  # the GPU torch uses, resolved through its UUID; None when it was not

    @property
    def store(self) -> str:
        return f"sqlite:///{self.out / 'mlflow.db'}"

    @property
    def simulated(self) -> bool:
        return self.shape.fake_gpu_watts is not None

    def device_overrides(self) -> list[str]:
        """Where the jobs run: the GPU, or the CPU labelled as the simulated GPU it stands in for."""
        if not self.simulated:
            return [f"hardware.device={self.shape.device}"]
        return [
            f"hardware={self.shape.simulated_profile}",
            f"hardware.device={self.shape.device}",
            f"monitor.fake_gpu_watts={self.shape.fake_gpu_watts}",
        ]

    def grid(self) -> list[str]:
        """What every job of the check shares, wherever it runs: weights, data, windows."""
        return ["model.weights=random", "dataset=synthetic_text", *self.shape.overrides]

    def base(self) -> list[str]:
        return [*self.grid(), *self.device_overrides()]

    def needs_gpu(self) -> int:
        """The NVML index to read, or an error saying why the GPU cannot be read as the job's."""
        if self.nvml_index is None:
            raise RuntimeError(
                "the GPU torch uses was not resolved to an NVML device through its UUID (see the machine "
                "table): reading any index would meter a GPU that may not be the job's"
            )
        return self.nvml_index


def command(overrides: list[str]) -> str:
    """The job's command line, quoted for a shell (the rehearsal's `{a,b}` overrides brace-expand)."""
    return shlex.join(["python", "-m", "ecopipe", *overrides])


def run_job(ctx: Context, *overrides: str, base: list[str] | None = None) -> tuple[dict, dict, str, str]:
    """One job in this process: (metrics, tags, run id, the equivalent command line)."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from ecopipe.config import CONFIG_DIR, register_configs
    from ecopipe.job import run_job as run

    register_configs()
    args = [*(ctx.base() if base is None else base), *overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={ctx.store}", *args])
    outcome = run(cfg)
    tags = MlflowClient(ctx.store).get_run(outcome.run_id).data.tags
    return outcome.metrics, tags, outcome.run_id, command(args)


def metric_history(ctx: Context, run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(ctx.store).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]
