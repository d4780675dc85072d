"""Text generation end to end: tokens counted, the prefill phase, perplexity of saved weights, compiled."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from ecopipe.names import Tag
from tests.workloads.conftest import (
    LINES,
    MINILM,
    TEXT,
    quality_keys,
    run,
    shipped_tiny_parameters,
    text_dir,
    tiny,
)


@pytest.mark.parametrize("model", ["gpt2", "opt-125m", "qwen2.5-0.5b", "llama-3.2-1b", "phi-2"])
def test_generation_random_weights_counts_tokens(make_cfg, client, model):
    metrics, tags = run(make_cfg, client, *tiny(model), *TEXT)
    samples = metrics["samples"]
    assert samples > 0 and samples % 8 == 0  # whole passes over the 8 prompts
    assert metrics["tokens_in"] == samples * 16  # seq_len synthetic ids per prompt
    assert metrics["tokens_out"] == samples * 4  # exactly max_new_tokens: min = max, greedy
    assert tags[Tag.DTYPE] == "torch.float32" and tags[Tag.WEIGHTS] == "random"
    assert quality_keys(metrics) == set()
    assert metrics["parameters"] == shipped_tiny_parameters(model)
    assert metrics["co2e_g_per_1k_tokens"] > 0
    assert metrics["tokens"] == metrics["tokens_out"]  # generation is normalised by generated tokens


def test_prefill_phase_generates_one_token_per_prompt(make_cfg, client):
    metrics, _ = run(make_cfg, client, *tiny("gpt2"), *TEXT, "model.phase=prefill")
    assert metrics["tokens_in"] == metrics["samples"] * 16
    assert metrics["tokens_out"] == metrics["samples"]  # the prefill's one token; decode = generate - prefill
    # A prefill window is normalised by the prompt tokens it processed, not by its one output token.
    assert metrics["tokens"] == metrics["tokens_in"]
    assert metrics["energy_per_1k_tokens_gross_j"] == pytest.approx(
        metrics["energy_gross_j.total"] * 1000 / metrics["tokens_in"]
    )


def save_tiny_gpt2(directory: Path) -> None:
    """A tiny GPT-2 with the offline BERT WordPiece tokenizer beside it, as save_pretrained writes them."""
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def reference_perplexity(model_dir: Path, seq_len: int) -> float:
    """Line by line, unpadded: what the batched, left-padded computation must reproduce."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir).eval()
    nll = count = 0.0
    for line in (line.strip() for line in LINES):
        if not line:
            continue
        ids = tokenizer(line, truncation=True, max_length=seq_len, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nll += float(model(ids, labels=ids).loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_pretrained_directory_on_real_text_reports_perplexity(make_cfg, client, tmp_path):
    model_dir, data_dir = tmp_path / "gpt2", text_dir(tmp_path / "text")
    save_tiny_gpt2(model_dir)
    real_text = [
        "dataset=wikitext",
        f"dataset.hf_id={data_dir}",
        "dataset.hf_config=null",
        "dataset.limit=100",
        "dataset.seq_len=12",
        "batch_size=3",
        "model.max_new_tokens=3",
    ]
    metrics, tags = run(make_cfg, client, "model=gpt2", f"model.hf_id={model_dir}", *real_text)
    assert tags[Tag.WEIGHTS] == "pretrained"
    assert metrics["tokens_out"] == metrics["samples"] * 3 and metrics["tokens_in"] > metrics["samples"]
    assert metrics["quality.perplexity"] == pytest.approx(reference_perplexity(model_dir, 12), rel=1e-4)

    # The same weights on synthetic ids: no language, so no perplexity; random weights: no quality either.
    metrics, _ = run(make_cfg, client, "model=gpt2", f"model.hf_id={model_dir}", *TEXT)
    assert quality_keys(metrics) == set()
    metrics, tags = run(make_cfg, client, *tiny("gpt2"), *real_text)
    assert quality_keys(metrics) == set() and tags[Tag.WEIGHTS] == "random"
    assert metrics["tokens_in"] > 0  # tokenised offline by the packaged WordPiece tokenizer


def test_compiled_engine_uses_static_cache_and_torch_compile(make_cfg, client):
    """On the CPU a tiny model compiles in ~15 s; compilation runs in load, outside the measured window."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    metrics, _ = run(make_cfg, client, *tiny("gpt2"), *TEXT, "engine=compiled")
    assert counters["stats"]["unique_graphs"] > before
    assert metrics["tokens_out"] == metrics["samples"] * 4
