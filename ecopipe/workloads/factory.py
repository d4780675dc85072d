"""Builds the workload a config names, refusing impossible combinations before anything loads."""

from __future__ import annotations

from ecopipe.config import Config, ConfigError, Engine, Framework
from ecopipe.hardware import resolve_device
from ecopipe.workloads.base import Workload
from ecopipe.workloads.hub import hub_unreachable, needs_hub


def build_workload(cfg: Config) -> Workload:
    if needs_hub(cfg):  # before any hub library is imported: an unreachable hub switches them offline
        hub_unreachable()
    if cfg.strategy.selects:
        from ecopipe.selection.workload import build_selection_workload

        return build_selection_workload(cfg)
    if cfg.model.framework is Framework.sklearn:
        from ecopipe.workloads.sklearn import SklearnWorkload

        if cfg.engine is not Engine.eager:
            raise ConfigError(
                f"engine={cfg.engine.value} applies to text generation, not to model={cfg.model.name}."
            )
        resolve_device(cfg.hardware.device, cpu_only=True)
        return SklearnWorkload(cfg.model, cfg.dataset, cfg.precision.name, cfg.batch_size, cfg.seed)
    from ecopipe.workloads.hf import build_hf_workload

    return build_hf_workload(cfg)
