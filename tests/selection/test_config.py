"""Presets and bad selection configs, refused before anything loads."""

from __future__ import annotations

import pytest

from ecopipe.config import ConfigError, StrategyConfig
from ecopipe.selection.workload import build_selection_workload
from tests.selection.conftest import compose_cfg


def test_presets_name_tolerances_and_conflicts_are_refused():
    default = StrategyConfig().resolved_tolerance()
    assert default == StrategyConfig(preset="balanced").resolved_tolerance()
    assert StrategyConfig(preset="energy_saver").resolved_tolerance() > default
    assert StrategyConfig(preset="accuracy_first").resolved_tolerance() < default
    with pytest.raises(ConfigError, match="both set"):
        StrategyConfig(preset="balanced", tolerance=0.05).resolved_tolerance()
    with pytest.raises(ConfigError, match="aggressive"):
        StrategyConfig(preset="aggressive").resolved_tolerance()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["strategy=cascade", "pool=none"], "needs a pool"),
        (["strategy=cascade", "strategy.target=energy_budget"], "energy_budget_j_per_1k"),
        (["strategy=router", "strategy.target=energy_budget"], "energy_budget_j_per_1k"),
        (["strategy=oracle", "+strategy.preset=balanced"], "cascades and routers only"),
        (["strategy=cascade", "pool.members=[decision_tree,ridge]"], "classifiers"),
        (["strategy=cascade", "pool.members=[decision_tree,nope]"], "not a conf/model option"),
        (["strategy=cascade", "pool.dataset=mnist"], "digits_hard"),
        (["strategy=cascade", "precision=fp16"], "precision=fp32"),
    ],
)
def test_bad_selection_configs_are_refused_before_loading(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        build_selection_workload(compose_cfg(*overrides))
