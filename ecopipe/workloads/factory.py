"""Builds the workload a config names, refusing impossible combinations before anything loads.

A workload family is a `Workload` subclass whose constructor takes the job's `Config` and refuses, cheaply,
whatever it cannot run. The package's families are `FAMILIES`, chosen by the model's framework and task
and imported only when chosen; a family kept elsewhere is named by its class path in `model._target_`.
"""

from __future__ import annotations

import importlib

from ecopipe.config import Config, ConfigError, Framework, ModelConfig, Task
from ecopipe.targets import class_at
from ecopipe.workloads.base import Workload
from ecopipe.workloads.hub import hub_unreachable, needs_hub

# (framework, task) -> the family's `<module>.<Class>` in ecopipe.workloads
FAMILIES = {
    (Framework.sklearn, Task.tabular_classification): "sklearn.SklearnWorkload",
    (Framework.sklearn, Task.tabular_regression): "sklearn.SklearnWorkload",
    (Framework.transformers, Task.text_generation): "text.TextGenerationWorkload",
    (Framework.transformers, Task.image_classification): "vision.ImageClassificationWorkload",
    (Framework.transformers, Task.speech_recognition): "audio.SpeechRecognitionWorkload",
    (Framework.transformers, Task.sentence_embedding): "embedding.SentenceEmbeddingWorkload",
}


def family(model: ModelConfig) -> type[Workload]:
    """The model's workload family: its `_target_` where set, else the package's for its framework and
    task."""
    if model._target_ is not None:
        return class_at("model._target_", model._target_, Workload, "a workload family")
    path = FAMILIES.get((model.framework, model.task))
    if path is None:
        allowed = "; ".join(
            f"framework={framework.value}: {', '.join(t.value for f, t in FAMILIES if f is framework)}"
            for framework in dict.fromkeys(f for f, _ in FAMILIES)
        )
        raise ConfigError(
            f"model.framework={model.framework.value} with model.task={model.task.value} has no workload "
            f"family; the package's: {allowed} (or a family of your own: model._target_=<module.Class>, a "
            "subclass of ecopipe.workloads.base.Workload)."
        )
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def build_workload(cfg: Config) -> Workload:
    if needs_hub(cfg):  # before any hub library is imported: an unreachable hub switches them offline
        hub_unreachable()
    if cfg.strategy.selects:
        from ecopipe.selection.workload import build_selection_workload

        return build_selection_workload(cfg)
    return family(cfg.model)(cfg)
