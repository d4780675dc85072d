"""Image classification end to end: random weights, accuracy of a saved classifier, label mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from ecopipe.names import Tag
from ecopipe.workloads.vision import label_mapping
from tests.workloads.conftest import IMAGES, quality_keys, run, shipped_tiny_parameters, tiny


@pytest.mark.parametrize("model", ["vit-base-patch16-224", "resnet-50"])
def test_image_classification_random_weights(make_cfg, client, model):
    metrics, tags = run(make_cfg, client, *tiny(model), *IMAGES)
    assert metrics["samples"] > 0 and metrics["samples"] % 8 == 0
    assert quality_keys(metrics) == set() and tags[Tag.DTYPE] == "torch.float32"
    assert metrics["parameters"] == shipped_tiny_parameters(model)


def image_folder(root: Path) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(3)
    files = []
    for label, name in enumerate(["cat", "dog"]):
        (root / "test" / name).mkdir(parents=True)
        for i in range(5):
            path = root / "test" / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
            files.append((path, label))
    return files


def test_pretrained_classifier_reports_accuracy_on_labelled_images(make_cfg, client, tmp_path):
    model_dir, data_dir = tmp_path / "vit", tmp_path / "images"
    files = image_folder(data_dir)
    torch.manual_seed(2)
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )
    model = transformers.ViTForImageClassification(config).eval()
    processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    with torch.no_grad():
        pixels = processor(images=[Image.open(p).convert("RGB") for p, _ in files], return_tensors="pt")
        predicted = model(**pixels).logits.argmax(-1).numpy()
    expected = float(np.mean(predicted == np.array([label for _, label in files])))

    metrics, _ = run(
        make_cfg,
        client,
        "model=vit-base-patch16-224",
        f"model.hf_id={model_dir}",
        "dataset=cifar10",
        f"dataset.hf_id={data_dir}",
        "dataset.input_column=image",
        "dataset.label_column=label",
        "batch_size=4",
    )
    assert metrics["quality.accuracy"] == pytest.approx(expected)
    metrics, _ = run(make_cfg, client, "model=vit-base-patch16-224", f"model.hf_id={model_dir}", *IMAGES)
    assert (
        quality_keys(metrics) == set()
    )  # synthetic images have no labels: nothing rather than a fake number


def test_label_mapping_by_name_generic_or_none():
    imagenet = {0: "tench, Tinca tinca", 1: "English springer, English springer spaniel", 2: "golf ball"}
    assert label_mapping(["golf_ball", "tench"], imagenet) == {0: 2, 1: 0}
    assert label_mapping(["airplane", "tench"], imagenet) is None
    assert label_mapping(["a", "b"], {0: "LABEL_0", 1: "LABEL_1"}) == {0: 0, 1: 1}
    assert label_mapping(["a", "b", "c"], {0: "LABEL_0", 1: "LABEL_1"}) is None
