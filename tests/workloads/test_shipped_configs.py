"""The shipped model configs (ecopipe/model_configs) build the published architectures, to the parameter."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ecopipe.config import CONFIG_DIR
from ecopipe.workloads.loading import MODEL_CONFIG_DIR, resolve_source, skeleton
from tests.workloads.conftest import MINILM

# Parameter counts of the published checkpoints (the hub's safetensors totals).
PUBLISHED = {
    "gpt2": 124_439_808,
    "opt-125m": 125_239_296,
    "opt-350m": 331_196_416,
    "opt-1.3b": 1_315_758_080,
    "opt-2.7b": 2_651_596_800,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "llama-3.2-1b": 1_235_814_400,
    "phi-2": 2_779_683_840,
    "vit-base-patch16-224": 86_567_656,
    "resnet-50": 25_557_032,
    "whisper-tiny": 37_760_640,
    "whisper-base": 72_593_920,
    "all-MiniLM-L6-v2": 22_713_216,
}


def transformers_models() -> list[str]:
    return sorted(
        p.stem for p in (CONFIG_DIR / "model").glob("*.yaml") if OmegaConf.load(p).framework == "transformers"
    )


def test_every_transformers_model_option_has_a_shipped_config():
    assert set(transformers_models()) == set(PUBLISHED)
    assert {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")} == set(PUBLISHED)


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_shipped_config_builds_the_full_size_architecture(make_cfg, model):
    cfg = OmegaConf.to_object(make_cfg(f"model={model}", "model.weights=random", fast=False))
    architecture = skeleton(resolve_source(cfg.model))  # on the meta device: no memory, no download
    assert type(architecture).__name__ == cfg.model.architecture
    assert sum(p.numel() for p in architecture.parameters()) == PUBLISHED[model]


def test_minilm_shipped_config_equals_the_packaged_checkpoint():
    shipped = json.loads((MODEL_CONFIG_DIR / "all-MiniLM-L6-v2.json").read_text())
    packaged = json.loads((MINILM / "config.json").read_text())
    assert {k: packaged[k] for k in shipped} == shipped
