"""The checks of a job's configuration that its types cannot express, run before any work.

Keys the schema lacks (Hydra adds `+key=value` overrides even to a typed node), numbers outside the
Range their fields declare (ecopipe.config), and settings that do not hold together (a device string, a
task that fits the data set, an experiment name MLflow can store): each refused in one paragraph
naming the key and the allowed values, before the MLflow run opens.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterator
from dataclasses import Field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig

from ecopipe.config import (
    TASK_DATA,
    Attribution,
    Config,
    ConfigError,
    DataMismatchError,
    DataSource,
    ImpactConfig,
)
from ecopipe.reference import TIERS

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def schema_fields(schema: type | None = None, prefix: str = "") -> Iterator[tuple[str, Field, Any]]:
    """Every leaf key of the schema: its dotted name, dataclass field and type (nested dataclasses walked)."""
    schema = schema or Config
    types = typing.get_type_hints(schema)
    for item in fields(schema):
        kind = types[item.name]
        if isinstance(kind, type) and is_dataclass(kind):
            yield from schema_fields(kind, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item, kind


def _is_open(kind: Any) -> bool:
    """A dict-typed node (model.params, model.config_overrides) takes any keys on purpose."""
    return typing.get_origin(kind) is dict or kind is dict


def check_known_keys(raw: DictConfig) -> None:
    """Refuse keys the schema lacks: Hydra adds `+key=value` overrides even to a typed node.

    Keys under an open node (model.params, model.config_overrides) are the user's to choose.
    """
    known = {name: kind for name, _, kind in schema_fields()}
    open_nodes = tuple(f"{name}." for name, kind in known.items() if _is_open(kind))

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            if name in known or name.startswith(open_nodes):
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig) and any(k.startswith(f"{name}.") for k in known):
                walk(child, f"{name}.")
                continue
            siblings = sorted({k[len(prefix) :].split(".")[0] for k in known if k.startswith(prefix)})
            near = [prefix + k for k in difflib.get_close_matches(str(key), siblings, n=1, cutoff=0.6)]
            by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}  # a key put under the wrong node
            near = near or [by_leaf[k] for k in difflib.get_close_matches(str(key), list(by_leaf), 1, 0.8)]
            level = f"keys under {prefix[:-1]}" if prefix else "top-level keys"
            hint = f"did you mean {near[0]}?" if near else f"{level}: {', '.join(siblings)}."
            raise ConfigError(f"{name} is not a key of ecopipe's configuration; {hint}")

    walk(raw, "")


def check_ranges(node: object, prefix: str = "") -> None:
    """Finiteness and range of every numeric key of `node` (a schema dataclass), from its fields' Range."""
    schema = type(node)
    for name, item, _ in schema_fields(schema):
        allowed = item.metadata.get("range")
        value = node
        for part in name.split("."):
            value = getattr(value, part)
        if allowed is not None and value is not None and not allowed.admits(value):
            what = "an integer" if isinstance(value, int) else "a finite number"
            raise ConfigError(f"{prefix}{name}={value} is invalid: it must be {what}, {allowed.describe()}.")


def validate_impact(impact: ImpactConfig) -> None:
    """The impact settings alone: shared by jobs and re-impacts."""
    check_ranges(impact, "impact.")
    if impact.embodied and impact.lifetime_years is None:
        raise ConfigError("impact.embodied=true needs impact.lifetime_years (the hardware's service life).")


# MLflow makes a folder of artifacts named after the experiment: a file name holds at most 255 bytes.
EXPERIMENT_NAME_BYTES = 200


def check_experiment_name(name: str) -> None:
    """An experiment name MLflow can store and name a folder after: not empty, not too long."""
    if not name.strip():
        raise ConfigError("tracking.experiment is empty: name the experiment (default: ecopipe).")
    if len(name.encode()) > EXPERIMENT_NAME_BYTES:
        raise ConfigError(
            f"tracking.experiment is {len(name.encode())} bytes long: at most {EXPERIMENT_NAME_BYTES} (its "
            "artifacts' folder is named after it)."
        )
    if name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        raise ConfigError(
            f"tracking.experiment={name!r} cannot name its artifacts' folder: a / or \\, '.' or '..', or an "
            "unprintable character would put it outside the store's mlartifacts/ or break it; use letters, "
            "digits, spaces and - _ ."
        )


def validate(cfg: Config) -> None:
    """Checks a type cannot express; raises ConfigError naming the key and the allowed values."""
    check_ranges(cfg)
    check_experiment_name(cfg.tracking.experiment)
    if cfg.monitor.target_rel_ci is not None and cfg.monitor.max_trials < max(cfg.monitor.trials, 2):
        raise ConfigError(
            f"monitor.max_trials={cfg.monitor.max_trials} is below monitor.trials={cfg.monitor.trials} "
            "(or 2, the fewest a CI needs): with monitor.target_rel_ci set, trials run from monitor.trials "
            "up to monitor.max_trials; raise max_trials, or set monitor.target_rel_ci=null."
        )
    if cfg.monitor.min_hz > cfg.monitor.max_hz:
        raise ConfigError(f"monitor.min_hz={cfg.monitor.min_hz} exceeds monitor.max_hz={cfg.monitor.max_hz}.")
    if not _DEVICE.match(cfg.hardware.device):
        raise ConfigError(
            f"hardware.device={cfg.hardware.device!r} is invalid: use auto, cpu, cuda or cuda:N."
        )
    validate_impact(cfg.impact)
    if cfg.impact.attribution is Attribution.net and cfg.monitor.idle_s <= 0:
        raise ConfigError(
            "impact.attribution=net needs an idle baseline to subtract: set monitor.idle_s > 0."
        )
    if cfg.hardware.tier is not None and cfg.hardware.tier not in TIERS:
        raise ConfigError(f"hardware.tier={cfg.hardware.tier} is unknown; allowed: {', '.join(TIERS)}.")
    if cfg.dataset.source is not DataSource.huggingface and cfg.dataset.split != "test":
        raise ConfigError(
            f"dataset.split={cfg.dataset.split} is invalid for dataset={cfg.dataset.name} "
            f"({cfg.dataset.source.value}): it has one measured split, `test`."
        )
    allowed = TASK_DATA[cfg.model.task]
    if cfg.dataset.kind not in allowed:
        names = ", ".join(sorted(k.value for k in allowed))
        raise DataMismatchError(
            f"dataset={cfg.dataset.name} ({cfg.dataset.kind.value} data) does not fit "
            f"model={cfg.model.name} (task {cfg.model.task.value}): it needs {names} data."
        )
