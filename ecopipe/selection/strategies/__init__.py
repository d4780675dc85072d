"""Selection strategies, one module each (cascade, router, oracle; `member`: each member alone).

A strategy is a `base.Strategy` subclass with a `name`; defining it registers it. This package's
modules are all imported here, so `strategy=<name>` finds any of them; a strategy kept outside the
package is named by its class path in `strategy._target_` (a Hydra user's habit), which imports it.
"""

from __future__ import annotations

import importlib
import pkgutil

from ecopipe.config import ConfigError, StrategyConfig
from ecopipe.selection.strategies.base import REGISTRY, Strategy
from ecopipe.targets import class_at

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def registered() -> list[type[Strategy]]:
    """Every known strategy, in the order the study reports them."""
    return sorted(REGISTRY.values(), key=lambda cls: (cls.rank, cls.name))


def strategy_class(cfg: StrategyConfig) -> type[Strategy]:
    """The strategy `cfg` names: by `_target_` (a class path) where set, else by `name`."""
    if cfg._target_ is None:
        if cfg.name not in REGISTRY:
            allowed = ", ".join(["single", *(cls.name for cls in registered())])
            raise ConfigError(
                f"strategy.name={cfg.name} is unknown; allowed: {allowed} (or a strategy of your own: "
                "strategy._target_=<module.Class>, a subclass of ecopipe.selection.strategies.base.Strategy)."
            )
        return REGISTRY[cfg.name]
    found = class_at("strategy._target_", cfg._target_, Strategy, "a strategy")
    if found.name != cfg.name:
        raise ConfigError(
            f"strategy.name={cfg.name}, but strategy._target_={cfg._target_} is the strategy named "
            f"{found.name!r}: set strategy.name={found.name}."
        )
    return found
