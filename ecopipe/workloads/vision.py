"""Image classification: the model's image processor, then one forward pass per batch; top-1 class out.

Accuracy needs the data set's classes to mean the model's classes. They are matched by name (each
model label's comma-separated synonyms, case-insensitive, e.g. ImageNet's "tench, Tinca tinca"); a
model with generic labels (LABEL_0...) and exactly as many classes as the data set is taken to use the
data set's order. Otherwise, and on synthetic images, no accuracy is reported: a number computed on
unrelated label spaces would be fake.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoImageProcessor, ViTImageProcessorPil

from ecopipe.workloads.batching import TensorBatch, chunks, to_device
from ecopipe.workloads.data import ImageSamples, load_images
from ecopipe.workloads.hf_base import HFWorkload
from ecopipe.workloads.loading import load_preprocessor

log = logging.getLogger(__name__)

VISION_KERNELS = (
    "linear",
    "layer_norm",
    "softmax",
    "gelu",
    "scaled_dot_product_attention",
    "conv2d",
    "batch_norm",
    "max_pool2d",
)
_GENERIC = re.compile(r"^label_?\d+$")


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def label_mapping(dataset_names: Sequence[str] | None, id2label: dict[int, str]) -> dict[int, int] | None:
    """Data set class index -> model class index, or None when the label spaces cannot be matched."""
    if not dataset_names:
        return None
    synonyms: dict[str, int] = {}
    for index, label in id2label.items():
        for synonym in str(label).split(","):
            synonyms.setdefault(_norm(synonym), int(index))
    mapping = {i: synonyms[_norm(name)] for i, name in enumerate(dataset_names) if _norm(name) in synonyms}
    if len(mapping) == len(dataset_names):
        return mapping
    generic = all(_GENERIC.match(_norm(str(label)).replace(" ", "")) for label in id2label.values())
    if generic and len(id2label) == len(dataset_names):
        return {i: i for i in range(len(dataset_names))}
    return None


class ImageClassificationWorkload(HFWorkload):
    kernels = VISION_KERNELS

    def prepare(self) -> list[TensorBatch]:
        samples: ImageSamples = load_images(self.dataset_cfg)
        size = int(getattr(self.source.config, "image_size", self.dataset_cfg.image_size))
        fallback = ViTImageProcessorPil(
            size={"height": size, "width": size}
        )  # resize, rescale, normalise (no torchvision)
        processor = load_preprocessor(self.source, AutoImageProcessor, fallback)
        self.targets: np.ndarray | None = None
        mapping = label_mapping(samples.label_names, self.source.config.id2label)
        if samples.labels is not None and mapping is not None:
            self.targets = np.array([mapping[label] for label in samples.labels])
        elif samples.labels is not None:
            log.warning(
                "dataset=%s: its classes do not match the labels of model=%s; no accuracy is reported.",
                self.dataset_cfg.name,
                self.model_cfg.name,
            )
        batches = []
        for images in chunks(samples.images, self.cfg.batch_size):
            pixels = processor(images=list(images), return_tensors="pt")
            batches.append(
                TensorBatch(
                    to_device({"pixel_values": pixels["pixel_values"]}, self.device, self.float_dtype),
                    len(images),
                )
            )
        return batches

    def predict(self, batch: TensorBatch) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(**batch.inputs).logits.argmax(dim=-1).cpu()

    def quality(self, outputs: Sequence[torch.Tensor]) -> dict[str, float]:
        if self.targets is None or not outputs:
            return {}
        predicted = torch.cat(list(outputs)).numpy()
        return {"accuracy": float(np.mean(predicted == self.targets[: len(predicted)]))}
