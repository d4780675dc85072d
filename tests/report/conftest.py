"""report.py's and summary.py's tests: a stage result with round numbers, built from the stage's own
typed dataclasses.

No sensor and no job, so these checks run in milliseconds: the mutation run (`make mutate`) leans on
them for report.py and summary.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

from scipy import stats

from ecopipe.config import Attribution, ImpactConfig, Phase
from ecopipe.monitor.energy import Energy, Power, Window
from ecopipe.results import IdleBaseline, InferenceResult, ModelFacts, TrialResult

T_975_1 = float(stats.t.ppf(0.975, 1))  # two trials: one degree of freedom


def trial(gpu: float, cpu: float, ram: float, seconds: float) -> TrialResult:
    return TrialResult(Window(Energy(gpu, cpu, ram), seconds, 100.0, 100.0 + seconds), 2, 100, 1000, 400)


def result(**changes) -> InferenceResult:
    """Two trials of 100 inferences: 10.5 J in 0.1 s, then 15.5 J in 0.15 s; idle 26 W."""
    made = InferenceResult(
        device="cuda:0",
        sources={"gpu": "nvml_counter", "cpu": "estimated_specpower", "ram": "estimated_rss"},
        measured={"gpu": True, "cpu": False, "ram": False},
        methods={"cpu": "8 W share", "ram": "0.375 W/GB"},
        resolution_s={"gpu": 0.1, "cpu": 0.01, "ram": 0.0},
        facts=ModelFacts(1_000_000, 500_000.0, "float16", "pretrained", phase=Phase.generate),
        load=Window(Energy(0.0, 1.0, 0.25), 0.5),
        fit=Window(Energy(0.0, 4.0, 0.0), 2.0),
        baseline=IdleBaseline(Window(Power(20.0, 5.0, 1.0) * 2.0, 2.0), None),  # 26 W
        trials=(trial(8.0, 2.0, 0.5, 0.1), trial(12.0, 3.0, 0.5, 0.15)),
        quality={"accuracy": 0.91234, "loss": 0.3},
        batch_latencies_s=(0.01, 0.02, 0.03, 0.04),
        batch_size=8,
        trace=None,
    )
    return replace(made, **changes)


def two(a: float, b: float) -> dict[str, float]:
    """Mean, 95% half-width and CV of two values, by hand."""
    mean, spread = (a + b) / 2, abs(a - b) / math.sqrt(2)
    return {"": mean, "ci95": T_975_1 * spread / math.sqrt(2), "cv": spread / mean}


FACTORS = ImpactConfig(carbon_intensity=400.0, pue=1.5, wue=2.0, ewif=3.0, attribution=Attribution.net)
