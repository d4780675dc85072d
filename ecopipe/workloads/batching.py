"""Batches built once at load time, already on the device, with their host-side counts precomputed.

Counting tokens on the host at load time keeps the measured loop free of device-to-host syncs that a
`mask.sum().item()` per batch would add.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from ecopipe.workloads.data import TextSamples

T = TypeVar("T")


@dataclass(frozen=True)
class TensorBatch:
    inputs: dict[str, torch.Tensor]  # model inputs, on the device
    size: int  # samples
    tokens_in: int = 0  # real (unpadded) input tokens

    def __len__(self) -> int:
        return self.size


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_device(inputs: dict[str, Any], device: str, float_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Move tensors to the device; floating inputs (pixels, audio features) take the weights' dtype."""
    moved = {}
    for key, value in inputs.items():
        if torch.is_floating_point(value):
            moved[key] = value.to(device=device, dtype=float_dtype)
        else:
            moved[key] = value.to(device)
    return moved


@dataclass(frozen=True)
class TextEncoding:
    """How prompts become token ids for one model."""

    vocab_size: int
    max_length: int
    padding_side: str  # left for generation (new tokens follow the prompt), right for encoders
    fixed_length: bool  # pad every batch to max_length (static shapes for compiled engines)
    add_special_tokens: bool = True


def token_batches(
    samples: TextSamples,
    tokenizer: PreTrainedTokenizerBase | None,
    encoding: TextEncoding,
    batch_size: int,
    device: str,
) -> list[TensorBatch]:
    """Synthetic token ids are used as they are; real text is tokenised, truncated and padded per batch.

    A tokenizer whose vocabulary is larger than the model's (the offline WordPiece for random weights)
    has its ids folded into the model's range: the token counts, which drive the cost, are unchanged.
    """
    batches: list[TensorBatch] = []
    if not samples.real:
        assert samples.token_ids is not None
        for rows in chunks(samples.token_ids, batch_size):
            ids = torch.as_tensor(rows)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            batches.append(TensorBatch(to_device(inputs, device, torch.float32), len(rows), int(ids.numel())))
        return batches
    assert tokenizer is not None and samples.texts is not None
    tokenizer.padding_side = encoding.padding_side
    for texts in chunks(samples.texts, batch_size):
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=encoding.max_length,
            return_tensors="pt",
            padding="max_length" if encoding.fixed_length else "longest",
            add_special_tokens=encoding.add_special_tokens,
        )
        mask = encoded["attention_mask"]
        ids = encoded["input_ids"] % encoding.vocab_size
        inputs = {"input_ids": ids, "attention_mask": mask}
        batches.append(TensorBatch(to_device(inputs, device, torch.float32), len(texts), int(mask.sum())))
    return batches
