"""A class a config names by its path in `_target_` (a Hydra user's habit): a selection strategy or a
workload family kept outside the package, imported when the job is planned and refused in one line,
before anything loads, where it cannot be imported or is not the kind of class the key takes."""

from __future__ import annotations

import importlib
from typing import TypeVar

from ecopipe.config import ConfigError

T = TypeVar("T")


def class_at(key: str, path: str, base: type[T], what: str) -> type[T]:
    """The class `path` (`module.Class`) names; `key` (`model._target_`) and `what` (`a workload family`)
    word the refusal."""
    module, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{key}={path} cannot be imported: {error}.") from error
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(f"{key}={path} is not {what}: a subclass of {base.__module__}.{base.__qualname__}.")
    return found
