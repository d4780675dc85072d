"""Sentence embeddings: an encoder, mean-pooled over real tokens and L2-normalised (sentence-transformers'
recipe for all-MiniLM-L6-v2), one vector per input text. No quality metric is defined for this task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ecopipe.workloads.batching import TensorBatch, TextEncoding, token_batches
from ecopipe.workloads.data import load_text
from ecopipe.workloads.hf_base import HFWorkload
from ecopipe.workloads.loading import load_tokenizer
from ecopipe.workloads.text import TEXT_KERNELS, vocab_size


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class SentenceEmbeddingWorkload(HFWorkload):
    kernels = TEXT_KERNELS

    def positions_needed(self) -> tuple[int, str, tuple[str, ...]]:
        seq_len = self.dataset_cfg.seq_len
        return seq_len, f"dataset.seq_len={seq_len}", ("dataset.seq_len",)

    def prepare(self) -> list[TensorBatch]:
        data = self.dataset_cfg
        samples = load_text(data, vocab_size(self.source.config))
        tokenizer = None
        if samples.real:
            tokenizer, self.extra["tokenizer"] = load_tokenizer(self.source)
        else:
            self.extra["tokenizer"] = "none (synthetic token ids)"
        encoding = TextEncoding(vocab_size(self.source.config), data.seq_len, "right", fixed_length=False)
        return token_batches(samples, tokenizer, encoding, self.cfg.batch_size, self.device)

    def predict(self, batch: TensorBatch) -> torch.Tensor:
        with torch.inference_mode():
            hidden = self.model(**batch.inputs).last_hidden_state
            return F.normalize(mean_pool(hidden, batch.inputs["attention_mask"]), dim=-1).float().cpu()

    def batch_tokens(self, batch: TensorBatch, output: torch.Tensor) -> tuple[int, int]:
        return batch.tokens_in, 0

    def quality(self, outputs: Sequence[torch.Tensor]) -> dict[str, float]:
        return {}
