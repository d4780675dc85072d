"""Text generation with a causal LM: greedy, seeded, fixed token counts, prefill and generate phases.

`model.phase=generate` measures `generate` producing exactly `model.max_new_tokens` tokens per prompt
(min = max, so an early end-of-sequence cannot shorten the work): one prefill pass over the prompt,
then max_new_tokens - 1 decode steps. `model.phase=prefill` measures the same `generate` call with one
new token: the prefill pass alone, with the same set-up (cache allocation, logits of the last position
only). So decode = generate - prefill, per prompt, covers exactly max_new_tokens - 1 decode steps, and
the generation overheads cancel. The aggregate tables show both phases as rows (the `phase` column);
the subtraction is left to the reader.

`engine=compiled` is what transformers supports: a static KV cache, and the decode step compiled with
torch.compile (transformers' automatic compilation; on the CPU it is switched on explicitly). The
compilation for every batch shape happens in `load`, so it is metered as loading, never measured as
inference.

Perplexity (real weights on real text only) is computed after the measured windows from a separate
forward pass over the same prompts with labels: generate's own prefill computes the logits of the last
position only, and measuring full logits would overstate prefill.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Sequence

import torch
from transformers import CompileConfig, GenerationConfig

from ecopipe.config import Engine, Phase
from ecopipe.workloads.batching import TensorBatch, TextEncoding, token_batches
from ecopipe.workloads.data import TextSamples, load_text
from ecopipe.workloads.hf_base import HFWorkload
from ecopipe.workloads.loading import load_tokenizer

TEXT_KERNELS = (
    "linear",
    "layer_norm",
    "softmax",
    "gelu",
    "silu",
    "scaled_dot_product_attention",
    "embedding",
    "cross_entropy",
)


def vocab_size(config: object) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.vocab_size)


def first_token_id(*candidates: int | list[int] | None) -> int:
    """The first id set among candidates (an id list counts by its first id); 0 when none is."""
    for candidate in candidates:
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return 0


def compile_config(device: str) -> CompileConfig:
    if device.startswith("cuda"):
        return CompileConfig()  # transformers' default: inductor, reduce-overhead (CUDA graphs)
    config = CompileConfig(mode="default")  # CUDA graphs do not exist on the CPU
    config._compile_all_devices = True  # transformers' switch for compiling off-GPU
    return config


class TextGenerationWorkload(HFWorkload):
    kernels = TEXT_KERNELS
    engines = frozenset({Engine.eager, Engine.compiled})
    phases = frozenset({Phase.generate, Phase.prefill})

    def positions_needed(self) -> tuple[int, str, tuple[str, ...]]:
        seq_len = self.dataset_cfg.seq_len
        if self.model_cfg.phase is Phase.prefill:
            return seq_len + 1, f"dataset.seq_len={seq_len}, and one new token", ("dataset.seq_len",)
        new = self.model_cfg.max_new_tokens
        how = f"dataset.seq_len={seq_len} and model.max_new_tokens={new}"
        return seq_len + new, how, ("dataset.seq_len", "model.max_new_tokens")

    def prepare(self) -> list[TensorBatch]:
        data = self.dataset_cfg
        self.samples: TextSamples = load_text(data, vocab_size(self.source.config))
        tokenizer = None
        if self.samples.real:
            tokenizer, self.extra["tokenizer"] = load_tokenizer(self.source)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        else:
            self.extra["tokenizer"] = "none (synthetic token ids)"
        compiled = self.cfg.engine is Engine.compiled
        encoding = TextEncoding(
            vocab_size(self.source.config),
            data.seq_len,
            "left",
            fixed_length=compiled,
            add_special_tokens=self.real_weights,  # the offline WordPiece's [CLS]/[SEP] mean nothing to an LM
        )
        batches = token_batches(self.samples, tokenizer, encoding, self.cfg.batch_size, self.device)
        self.generation = self._generation_config(tokenizer)
        if compiled:
            for batch in {tuple(b.inputs["input_ids"].shape): b for b in batches}.values():
                self.predict(batch)  # compile every shape now: loading, not the measured window
        return batches

    def _generation_config(self, tokenizer: object) -> GenerationConfig:
        config = copy.deepcopy(self.model.generation_config)
        new_tokens = 1 if self.model_cfg.phase is Phase.prefill else self.model_cfg.max_new_tokens
        pad = first_token_id(
            config.pad_token_id,
            getattr(tokenizer, "pad_token_id", None),
            self.source.config.pad_token_id,
            config.eos_token_id,
        )
        config.update(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            temperature=None,
            top_p=None,
            top_k=None,
            max_length=None,
        )
        if self.cfg.engine is Engine.compiled:
            config.cache_implementation = "static"
            config.compile_config = compile_config(self.device)
        self.extra["new_tokens_per_prompt"] = new_tokens
        return config

    def predict(self, batch: TensorBatch) -> torch.Tensor:
        with torch.inference_mode():
            output = self.model.generate(**batch.inputs, generation_config=self.generation)
        return output[:, batch.inputs["input_ids"].shape[1] :].cpu()

    def batch_tokens(self, batch: TensorBatch, output: torch.Tensor) -> tuple[int, int]:
        return batch.tokens_in, int(output.numel())

    def quality(self, outputs: Sequence[torch.Tensor]) -> dict[str, float]:
        if not (self.real_weights and self.samples.real):
            return {}  # random token ids have no language to model
        takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        nll = tokens = 0.0
        with torch.inference_mode():
            for batch in self._batches:
                ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
                # Left padding: a token is scored only when the token before it is real, too.
                previous = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
                labels = ids.masked_fill((mask == 0) | (previous == 0), -100)
                predicted = int((labels != -100).sum())
                if predicted == 0:
                    continue
                extra = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)} if takes_positions else {}
                loss = self.model(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
                nll += float(loss) * predicted
                tokens += predicted
        return {"perplexity": math.exp(nll / tokens)} if tokens else {}
