"""Speech to text with Whisper: log-mel features from the model's feature extractor, then greedy
`generate` of up to `model.max_new_tokens` tokens per clip (a transcript ends where the model ends it).
Word error rate is reported when the weights are real and the data set has transcripts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import AutoFeatureExtractor, WhisperFeatureExtractor

from ecopipe.config import ConfigError
from ecopipe.workloads.batching import TensorBatch, chunks, to_device
from ecopipe.workloads.data import AudioSamples, load_audio
from ecopipe.workloads.hf_base import HFWorkload
from ecopipe.workloads.loading import load_preprocessor, load_tokenizer
from ecopipe.workloads.metrics import word_error_rate

AUDIO_KERNELS = (
    "linear",
    "layer_norm",
    "softmax",
    "gelu",
    "scaled_dot_product_attention",
    "conv1d",
    "embedding",
)


class SpeechRecognitionWorkload(HFWorkload):
    kernels = AUDIO_KERNELS

    def prepare(self) -> list[TensorBatch]:
        samples: AudioSamples = load_audio(self.dataset_cfg)
        config = self.source.config
        fallback = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        extractor = load_preprocessor(self.source, AutoFeatureExtractor, fallback)
        if samples.sampling_rate != extractor.sampling_rate:
            raise ConfigError(
                f"dataset.sampling_rate={samples.sampling_rate} does not match "
                f"model={self.model_cfg.name}, which takes {extractor.sampling_rate} Hz audio; set "
                f"dataset.sampling_rate={extractor.sampling_rate}."
            )
        self.references = samples.transcripts if self.real_weights else None
        self.tokenizer = load_tokenizer(self.source)[0] if self.references else None
        generation = copy.deepcopy(self.model.generation_config)
        generation.update(
            max_new_tokens=self.model_cfg.max_new_tokens, do_sample=False, num_beams=1, max_length=None
        )
        self.generation = generation
        batches = []
        for waves in chunks(samples.waveforms, self.cfg.batch_size):
            features = extractor(
                list(waves),
                sampling_rate=samples.sampling_rate,
                return_tensors="pt",
                return_attention_mask=True,
            )
            inputs = {
                "input_features": features["input_features"],
                "attention_mask": features["attention_mask"],
            }
            batches.append(TensorBatch(to_device(inputs, self.device, self.float_dtype), len(waves)))
        return batches

    def predict(self, batch: TensorBatch) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.generate(**batch.inputs, generation_config=self.generation).cpu()

    def batch_tokens(self, batch: TensorBatch, output: torch.Tensor) -> tuple[int, int]:
        pad = self.generation.pad_token_id
        return 0, int((output != pad).sum()) if pad is not None else int(output.numel())

    def quality(self, outputs: Sequence[torch.Tensor]) -> dict[str, float]:
        if not self.references or self.tokenizer is None or not outputs:
            return {}
        hypotheses = [
            text
            for output in outputs
            for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)
        ]
        return {"wer": word_error_rate(self.references[: len(hypotheses)], hypotheses)}
