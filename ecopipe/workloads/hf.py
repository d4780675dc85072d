"""The transformers families: one workload class per task, chosen here and imported only when chosen.
Everything a config can get wrong is refused in the class's constructor, before anything loads
(hf_base.py)."""

from __future__ import annotations

import importlib

from ecopipe.config import Config, ConfigError, Framework, Task
from ecopipe.workloads.base import Workload

FAMILIES = {
    Task.text_generation: ("ecopipe.workloads.text", "TextGenerationWorkload"),
    Task.image_classification: ("ecopipe.workloads.vision", "ImageClassificationWorkload"),
    Task.speech_recognition: ("ecopipe.workloads.audio", "SpeechRecognitionWorkload"),
    Task.sentence_embedding: ("ecopipe.workloads.embedding", "SentenceEmbeddingWorkload"),
}


def build_hf_workload(cfg: Config) -> Workload:
    if cfg.model.framework is not Framework.transformers:
        raise ConfigError(
            f"model.framework={cfg.model.framework.value} is not built here; transformers models use "
            "framework=transformers, scikit-learn estimators framework=sklearn."
        )
    if cfg.model.task not in FAMILIES:
        raise ConfigError(
            f"model.task={cfg.model.task.value} has no transformers workload; allowed: "
            f"{', '.join(t.value for t in FAMILIES)}."
        )
    module, name = FAMILIES[cfg.model.task]
    return getattr(importlib.import_module(module), name)(cfg)
