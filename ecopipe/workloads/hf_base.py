"""What every transformers family shares: refusals in the constructor, loading, precision, facts.

The constructor does only cheap work (device, the model's config, its architecture on the meta device,
a kernel probe, the data set's metadata) and refuses anything that cannot run; `load` then builds the
model, applies the precision and builds the batches on the device. A family subclass says which
kernels, engines and phases it needs and turns its data into batches (`prepare`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ecopipe.config import Config, ConfigError, Engine, Phase, Weights
from ecopipe.hardware import resolve_device
from ecopipe.results import ModelFacts
from ecopipe.workloads.base import Workload
from ecopipe.workloads.batching import TensorBatch
from ecopipe.workloads.data import check_dataset
from ecopipe.workloads.loading import build_model, count_parameters, resolve_source, skeleton
from ecopipe.workloads.precision import apply_precision, describe_dtype, linear_share, plan_precision

log = logging.getLogger(__name__)


class HFWorkload(Workload):
    kernels: ClassVar[tuple[str, ...]]  # kernels probed before fp16/bf16 is accepted (precision.py)
    engines: ClassVar[frozenset[Engine]] = frozenset({Engine.eager})
    phases: ClassVar[frozenset[Phase]] = frozenset({Phase.generate})

    def __init__(self, cfg: Config) -> None:
        model = cfg.model
        self.cfg, self.model_cfg, self.dataset_cfg = cfg, model, cfg.dataset
        if model.params:
            raise ConfigError(
                "model.params holds scikit-learn constructor arguments; a transformers model's "
                "architecture is changed with model.config_overrides (model.weights=random)."
            )
        if cfg.engine not in self.engines:
            raise ConfigError(
                f"engine={cfg.engine.value} does not apply to task {model.task.value}; allowed: "
                f"{', '.join(sorted(e.value for e in self.engines))}."
            )
        if model.phase not in self.phases:
            raise ConfigError(
                f"model.phase={model.phase.value} does not apply to task {model.task.value}; allowed: "
                f"{', '.join(sorted(p.value for p in self.phases))}."
            )
        self.device = resolve_device(cfg.hardware.device)
        self.source = resolve_source(model)
        architecture = skeleton(self.source)
        self.parameters = count_parameters(architecture)
        self.plan = plan_precision(
            cfg.precision.name,
            self.device,
            model.name,
            linear_share(architecture),
            model.weights is Weights.pretrained,
            self.kernels,
        )
        check_dataset(cfg.dataset)
        self._check_length()
        self.model: Any = None
        self._batches: list[TensorBatch] = []
        self.extra: dict[str, Any] = {
            "source": self.source.origin,
            "precision_method": self.plan.method,
            "engine": cfg.engine.value,
        }

    def positions_needed(self) -> tuple[int, str, tuple[str, ...]] | None:
        """The most token positions one sample takes, how, and the keys that set them; None: no tokens."""
        return None

    def _check_length(self) -> None:
        """Longer inputs than the model's position table fail mid-run (GPT-2: an IndexError)."""
        needed = self.positions_needed()
        config = self.source.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        most = getattr(text_config, "max_position_embeddings", None)
        if needed is None or most is None or needed[0] <= most:
            return
        positions, how, keys = needed
        raise ConfigError(
            f"one sample needs {positions} token positions ({how}), but {self.model_cfg.name} has only "
            f"{most} (max_position_embeddings in its config): lower {' or '.join(keys)} until they fit."
        )

    @property
    def real_weights(self) -> bool:
        return self.model_cfg.weights is Weights.pretrained

    @property
    def float_dtype(self) -> torch.dtype:
        """dtype of floating inputs: the weights' (float32 around dynamically quantised int8 layers)."""
        return self.plan.load_dtype

    def load(self) -> None:
        torch.manual_seed(self.cfg.seed)
        model = build_model(self.source, self.plan, self.device, self.cfg.seed)
        self.model, changes = apply_precision(model, self.plan)
        self.extra.update(changes)
        self._batches = self.prepare()
        if not self._batches:
            raise ConfigError(f"dataset={self.dataset_cfg.name} gave no samples to measure.")

    @abstractmethod
    def prepare(self) -> list[TensorBatch]:
        """Read the data and build the batches on the device; the model is loaded."""

    def batches(self) -> Sequence[TensorBatch]:
        return self._batches

    def batch_samples(self, batch: TensorBatch) -> int:
        return batch.size

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def facts(self) -> ModelFacts:
        return ModelFacts(
            parameters=self.parameters,
            effective_parameters=self.parameters * self.model_cfg.active_params_fraction,
            dtype=describe_dtype(self.model, self.plan),
            weights=self.model_cfg.weights.value,
            extra=dict(self.extra),
            phase=self.model_cfg.phase,
        )
