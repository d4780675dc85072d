"""No silent phase: a job of every workload family names each long step in its log before the step
runs (load, fit, warm-up, the idle baseline, each trial and each arm measured beside it), so that a
terminal without the live progress line, CI's or SLURM's, tells progress from a hang."""

from __future__ import annotations

import logging

import pytest

from ecopipe.job import run_job
from tests.selection.conftest import QUICK
from tests.workloads.conftest import IMAGES, TEXT, tiny

FAMILIES = {
    "tabular (scikit-learn)": ["model=logistic_regression"],
    "text generation": [*tiny("gpt2"), *TEXT],
    "sentence embedding": ["model=all-MiniLM-L6-v2", *TEXT],
    "image classification": [*tiny("resnet-50"), *IMAGES],
    "speech recognition": [
        *tiny("whisper-tiny"),
        "dataset=synthetic_audio",
        "dataset.limit=2",
        "dataset.audio_seconds=1",
        "model.max_new_tokens=3",
        "batch_size=2",
    ],  # fmt: skip
    "model selection (cascade)": [*QUICK, "strategy=cascade", "pool=digits_5"],
}


def phases_and_results(records: list[logging.LogRecord]) -> list[str]:
    """The log's phase lines and the lines that report a step's end, in order."""
    lines = [r.getMessage() for r in records]
    return [line for line in lines if line.startswith(("phase: ", "trial ", "idle baseline ("))]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_names_each_phase_before_it_runs(make_cfg, client, caplog, family):
    caplog.set_level(logging.INFO)
    outcome = run_job(make_cfg(*FAMILIES[family]))
    lines = phases_and_results(caplog.records)
    phases = [line.removeprefix("phase: ") for line in lines if line.startswith("phase: ")]
    assert phases[0] == "loading model and data"
    assert ("fitting the model" in phases) is (family == "tabular (scikit-learn)")
    warm_up = next(i for i, p in enumerate(phases) if p.startswith("warming up the model"))
    idle = next(i for i, p in enumerate(phases) if p.startswith("idle baseline ("))
    first_trial = next(i for i, p in enumerate(phases) if p.startswith("trial 1 of "))
    assert 0 < warm_up < idle < first_trial
    # Each measured step is named before its result is logged: the baseline, then every trial.
    assert lines.index(f"phase: {phases[idle]}") < next(
        i
        for i, line in enumerate(lines)
        if line.startswith("idle baseline (") and not line.startswith("phase")
    )
    trials = [line for line in lines if line.startswith("trial ") and ": " in line and " s, " in line]
    assert trials, lines
    for number, result in enumerate(trials, start=1):
        named = next(i for i, line in enumerate(lines) if line.startswith(f"phase: trial {number} of "))
        assert named < lines.index(result), (number, lines)
    arms = [p for p in phases if p.startswith("trial 1: arm ")]
    if family == "model selection (cascade)":  # every member and other strategy, each named as it runs
        named = {"trial 1: arm member_svc_rbf", "trial 1: arm oracle", "trial 1: arm router_balanced"}
        assert named <= set(arms)
        # Its Dataset entry is its pool's data, not the dataset= it does not read.
        (entry,) = client.get_run(outcome.run_id).inputs.dataset_inputs
        assert (entry.dataset.name, entry.dataset.source) == ("digits", '{"source": "pool digits_5"}')
    else:
        assert not arms
