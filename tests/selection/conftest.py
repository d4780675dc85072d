"""The selection tests' study and ledger: scikit-learn and PyTorch members on digits and digits_hard.

Most tests charge energy through a ledger: a sensor whose joules are a known cost per call plus a
known cost per row for every call of a member's `proba`, so "measured" energy is exact and what a
strategy should be charged can be computed independently of the code under test. The known costs
order the members differently from the pool's list: the workload must order them by what it priced.

The ledger is a stated exception to the rule that fakes stand in only for GPU power sensors and RAPL.
It stands in for an energy counter (what RAPL or NVML would be) behind the real EnergySensor interface,
but its counter is driven by the members' calls, so it needs to see them: `Ledger.charging()` wraps
`Member.proba` for the block it guards, never for the module. Why not the real CPU sensor: on this
machine it is an estimate that follows wall time, so every price and window would carry scheduling
noise, and the exact checks below (each arm's window = its accounting to 1e-9, prices = the known
costs, identical tuning with and without the test split) would have to become loose tolerances that
a wrong accounting could pass. The real path, real sensors and unwrapped members, is the job in
`test_study_job_end_to_end`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ecopipe.config import CONFIG_DIR, Config
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.selection.members import Member
from ecopipe.selection.workload import build_selection_workload
from ecopipe.sensors.base import Component, EnergySensor, Source
from ecopipe.stages.inference import run_inference
from tests.conftest import FAST

# Joules per call and per row: an order unlike the pool's list (and unlike the members' real costs).
# The costliest, random_forest, is not the most accurate: the reference (svc_rbf) is another member.
COSTS = {
    "decision_tree": (2e-3, 1e-5),
    "logistic_regression": (1e-3, 3e-5),
    "random_forest": (8e-3, 1e-3),
    "mlp_small": (3e-3, 5e-5),
    "small_cnn": (5e-3, 4e-4),
    "svc_rbf": (6e-3, 8e-4),
}
ORDER = sorted(COSTS, key=lambda n: COSTS[n][0] / 64 + COSTS[n][1])  # price per input at batch 64
QUICK = [*FAST, "pool.cost_window_s=0.02"]
HARD = [*QUICK, "pool=digits_hard", "pool.max_samples=3000"]


class Ledger(EnergySensor):
    """Cumulative joules = sum of known per-call + per-row costs over every member call (tests only).

    A FAKE-source CPU counter (see the module's docstring for why this exception to the fakes rule).
    """

    component = Component.CPU
    source = Source.FAKE
    device = "ledger"
    resolution_s = 0.0

    def __init__(self) -> None:
        self.joules = 0.0
        self.calls: defaultdict[str, list[int]] = defaultdict(list)  # member -> rows of each call

    def charge(self, name: str, rows: int) -> None:
        per_call, per_row = COSTS[name]
        self.joules += per_call + per_row * rows
        self.calls[name].append(rows)

    def read_joules(self) -> float:
        return self.joules

    @contextmanager
    def charging(self) -> Iterator[None]:
        """Every member call inside the block charges this ledger; outside it members run untouched."""
        original = Member.proba

        def charged(member: Member, x: np.ndarray) -> np.ndarray:
            self.charge(member.name, len(x))
            return original(member, x)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Member, "proba", charged)
            yield


def compose_cfg(*overrides: str, base: list[str] = HARD) -> Config:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=[*base, *overrides]))
    assert isinstance(cfg, Config)
    return cfg


@pytest.fixture(scope="package")
def ledger() -> Ledger:
    """One ledger for the package's study; it charges only inside its `charging()` blocks."""
    return Ledger()


def measured(ledger: Ledger, *overrides: str):
    cfg = compose_cfg(*overrides)
    workload = build_selection_workload(cfg)
    meter = EnergyMeter([ledger])
    meter.open()
    with ledger.charging():
        return workload, run_inference(workload, meter, cfg.monitor, cfg.batch_size)


@pytest.fixture(scope="package")
def study_run(ledger, tmp_path_factory):
    """A cascade job's study on a small digits_hard, with its findings."""
    workload, inference = measured(ledger, "strategy=cascade")
    findings = workload.findings(inference, tmp_path_factory.mktemp("findings"))
    return workload, inference, findings
