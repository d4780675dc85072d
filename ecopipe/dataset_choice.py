"""Which data set a job measures: the one the command line names, else its model's default.

With `model.weights=random` a hub default gives way to its synthetic twin, and a selection strategy
measures its pool's data set; the reason is said in the `ecopipe.dataset_choice` tag.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ecopipe.config import CONFIG_DIR, SINGLE, SYNTHETIC_OPTION, DatasetConfig, DataSource, Weights


def dataset_choice(raw: DictConfig, overrides: Sequence[str] | None) -> tuple[DictConfig, str]:
    """The data set a job measures, and why: the one named on the command line, else the model's default.

    Each model option names its task's natural data set (conf/model/*.yaml: wikitext, cifar10,
    librispeech_dummy, digits, diabetes); with `model.weights=random` a hub default gives way to its
    synthetic twin, so `model=opt-2.7b model.weights=random` runs offline with nothing else added.
    `overrides` are the job's command-line (and sweep) overrides; `dataset.*` keys among them still
    apply to the twin. None (a config composed by a caller): the data set as configured.
    A selection strategy measures its pool's data set, whatever `dataset` says.
    """
    if raw.strategy.name != SINGLE and raw.pool.dataset:  # no pool: refused later
        return raw, (
            f"{raw.pool.dataset} (pool {raw.pool.name}'s data set: strategy={raw.strategy.name} "
            "measures its pool's data, not dataset=)"
        )
    if overrides is None:
        return raw, f"{raw.dataset.name} (as configured)"
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    if any(o.key_or_group == "dataset" for o in parsed):
        return raw, f"{raw.dataset.name} (chosen with dataset=)"
    task = raw.model.task.value
    if raw.model.weights is not Weights.random or raw.dataset.source is not DataSource.huggingface:
        return raw, f"{raw.dataset.name} (default for {task}; dataset=... picks another)"
    twin = SYNTHETIC_OPTION[raw.dataset.kind]
    node = OmegaConf.merge(
        OmegaConf.structured(DatasetConfig), OmegaConf.load(CONFIG_DIR / "dataset" / f"{twin}.yaml")
    )
    for override in parsed:
        if override.key_or_group.startswith("dataset."):
            OmegaConf.update(node, override.key_or_group.removeprefix("dataset."), override.value())
    resolved = raw.copy()
    with open_dict(resolved):
        resolved.dataset = node
    return resolved, f"{twin} (default for {task} with random weights; dataset=... picks another)"
