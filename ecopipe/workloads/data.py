"""The measured data of the torch families: Hugging Face data sets and seeded synthetic ones.

`source: huggingface` reads `datasets.load_dataset(hf_id, hf_config, split=...)` from the hub, its local
cache or a local directory (text files, an image folder, ...); it is checked in the workload's
constructor, so an unreachable set (offline, not cached) is refused before anything loads, with the
synthetic option to use instead. The split is shuffled with `dataset.seed` before `dataset.limit`
samples are taken, so a limit is a seeded sample, not the first rows.
`source: synthetic` generates `limit` samples of the configured shape from the seed: token ids
(`seq_len` per prompt, no tokenizer), RGB images (`image_size` square) or audio (`audio_seconds` at
`sampling_rate`). Synthetic samples carry no labels: no quality metric is computed on them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecopipe.config import SYNTHETIC_OPTION, ConfigError, DataKind, DatasetConfig, DataSource
from ecopipe.workloads.hub import describe_offline, hub_unreachable

INPUT_COLUMNS = {
    DataKind.text: ("text", "sentence", "content"),
    DataKind.image: ("image", "img"),
    DataKind.audio: ("audio",),
}
LABEL_COLUMNS = {
    DataKind.text: (),
    DataKind.image: ("label", "labels", "fine_label"),
    DataKind.audio: ("text", "transcription", "sentence"),
}


@dataclass(frozen=True)
class TextSamples:
    texts: list[str] | None = None  # real text, tokenised by the workload
    token_ids: np.ndarray | None = None  # synthetic: (samples, seq_len) ids, no tokenizer needed

    @property
    def real(self) -> bool:
        return self.texts is not None


@dataclass(frozen=True)
class ImageSamples:
    images: list[Any]  # PIL images or HxWx3 uint8 arrays
    labels: list[int] | None = None
    label_names: list[str] | None = None


@dataclass(frozen=True)
class AudioSamples:
    waveforms: list[np.ndarray]
    sampling_rate: int
    transcripts: list[str] | None = None


def _describe(cfg: DatasetConfig) -> str:
    config = f", config {cfg.hf_config}" if cfg.hf_config else ""
    return f"dataset={cfg.name} ({cfg.hf_id}{config}, split {cfg.split})"


def _unavailable(cfg: DatasetConfig, error: Exception) -> ConfigError:
    synthetic = SYNTHETIC_OPTION.get(cfg.kind, "a synthetic option")
    return ConfigError(
        f"{_describe(cfg)} could not be loaded: {str(error).splitlines()[0]}. It is not in the Hugging "
        f"Face cache or a local directory, and {describe_offline(hub_unreachable())}; use "
        f"dataset={synthetic} to measure on generated data of the configured shape, or set dataset.hf_id "
        "to a local directory."
    )


def check_dataset(cfg: DatasetConfig) -> None:
    """Refuse a data set that cannot load, cheaply (no data files are read)."""
    if cfg.source is DataSource.synthetic:
        if cfg.limit is None:
            raise ConfigError(
                f"dataset={cfg.name} is synthetic: set dataset.limit (how many samples to generate)."
            )
        return
    if cfg.source is not DataSource.huggingface:
        raise ConfigError(
            f"dataset.source={cfg.source.value} is for tabular models; transformers models read "
            "source=huggingface or source=synthetic data."
        )
    if not cfg.hf_id:
        raise ConfigError(
            f"dataset={cfg.name} has source=huggingface and no dataset.hf_id (a hub id or directory)."
        )
    if cfg.kind is DataKind.audio and importlib.util.find_spec("torchcodec") is None:
        raise ConfigError(
            f"{_describe(cfg)} cannot be decoded: datasets {_datasets_version()} decodes audio with "
            "torchcodec, which is not installed (pip install torchcodec). Use dataset=synthetic_audio "
            "meanwhile."
        )
    import datasets

    try:
        builder = datasets.load_dataset_builder(cfg.hf_id, cfg.hf_config)
    except (OSError, ValueError) as error:  # ConnectionError and DatasetNotFoundError are OSErrors
        raise _unavailable(cfg, error) from error
    splits = {str(name) for name in (builder.info.splits or builder.config.data_files or {})}
    if splits and cfg.split.split("[")[0] not in splits:  # "test[:10%]" names the split "test"
        raise ConfigError(
            f"dataset.split={cfg.split} does not exist in {_describe(cfg)}; allowed: "
            f"{', '.join(sorted(splits))}."
        )


def _datasets_version() -> str:
    import datasets

    return datasets.__version__


def _load_split(cfg: DatasetConfig) -> Any:
    import datasets

    try:
        return datasets.load_dataset(cfg.hf_id, cfg.hf_config, split=cfg.split)
    except (OSError, ValueError) as error:
        raise _unavailable(cfg, error) from error


def _sample(data: Any, cfg: DatasetConfig) -> Any:
    """`limit` rows drawn with the data set's seed (the whole split when no limit)."""
    if cfg.limit is None:
        return data
    return data.shuffle(seed=cfg.seed).select(range(min(cfg.limit, len(data))))


def _column(
    data: Any, cfg: DatasetConfig, chosen: str | None, guesses: tuple[str, ...], role: str
) -> str | None:
    if chosen is not None:
        if chosen not in data.column_names:
            raise ConfigError(
                f"dataset.{role}_column={chosen} is not a column of {_describe(cfg)}; columns: "
                f"{', '.join(data.column_names)}."
            )
        return chosen
    return next((c for c in guesses if c in data.column_names), None)


def _input_column(data: Any, cfg: DatasetConfig) -> str:
    column = _column(data, cfg, cfg.input_column, INPUT_COLUMNS[cfg.kind], "input")
    if column is None:
        raise ConfigError(
            f"{_describe(cfg)} has no {cfg.kind.value} column among {', '.join(data.column_names)}; set "
            "dataset.input_column."
        )
    return column


def _rng(cfg: DatasetConfig) -> np.random.Generator:
    return np.random.default_rng(cfg.seed)


def load_text(cfg: DatasetConfig, vocab_size: int) -> TextSamples:
    if cfg.source is DataSource.synthetic:
        assert cfg.limit is not None
        return TextSamples(
            token_ids=_rng(cfg).integers(0, vocab_size, (cfg.limit, cfg.seq_len), dtype=np.int64)
        )
    data = _load_split(cfg)
    column = _input_column(data, cfg)
    data = _sample(data.filter(lambda row: bool(str(row[column]).strip())), cfg)  # wikitext has blank lines
    return TextSamples(texts=[str(text).strip() for text in data[column]])


def load_images(cfg: DatasetConfig) -> ImageSamples:
    if cfg.source is DataSource.synthetic:
        assert cfg.limit is not None
        size = cfg.image_size
        pixels = _rng(cfg).integers(0, 256, (cfg.limit, size, size, 3), dtype=np.uint8)
        return ImageSamples(images=list(pixels))
    data = _sample(_load_split(cfg), cfg)
    column = _input_column(data, cfg)
    label = _column(data, cfg, cfg.label_column, LABEL_COLUMNS[cfg.kind], "label")
    images = [
        image.convert("RGB") if hasattr(image, "convert") else np.asarray(image) for image in data[column]
    ]
    if label is None:
        return ImageSamples(images=images)
    names = getattr(data.features[label], "names", None)
    return ImageSamples(images=images, labels=[int(v) for v in data[label]], label_names=names)


def _waveform(decoded: Any) -> tuple[np.ndarray, int]:
    """A decoded audio cell: a dict (array, sampling_rate) or a torchcodec AudioDecoder."""
    if hasattr(decoded, "get_all_samples"):
        samples = decoded.get_all_samples()
        return samples.data.mean(dim=0).numpy().astype(np.float32), int(samples.sample_rate)
    return np.asarray(decoded["array"], dtype=np.float32), int(decoded["sampling_rate"])


def load_audio(cfg: DatasetConfig) -> AudioSamples:
    if cfg.source is DataSource.synthetic:
        assert cfg.limit is not None
        rng = _rng(cfg)
        t = np.arange(int(cfg.audio_seconds * cfg.sampling_rate), dtype=np.float32) / cfg.sampling_rate
        waves = []
        for _ in range(cfg.limit):  # a few tones under noise: speech-like energy spread, seeded
            tones = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 3000, 3))
            waves.append((0.05 * tones + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
        return AudioSamples(waveforms=waves, sampling_rate=cfg.sampling_rate)
    import datasets

    data = _sample(_load_split(cfg), cfg)
    column = _input_column(data, cfg)
    data = data.cast_column(column, datasets.Audio(sampling_rate=cfg.sampling_rate))
    label = _column(data, cfg, cfg.label_column, LABEL_COLUMNS[cfg.kind], "label")
    waves = [_waveform(cell)[0] for cell in data[column]]
    return AudioSamples(
        waveforms=waves,
        sampling_rate=cfg.sampling_rate,
        transcripts=[str(t) for t in data[label]] if label else None,
    )
