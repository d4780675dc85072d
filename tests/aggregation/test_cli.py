"""`python -m ecopipe.aggregate` as a user runs it, and the selection and decode tables."""

from __future__ import annotations

import pandas as pd
import pytest

from ecopipe.aggregate import main
from tests.aggregation.conftest import (
    EXPERIMENT,
    aggregate_cli,
    figures,
    grid,
)


def test_cli_writes_the_tables_and_says_where(runs, store, tmp_path):
    grid(runs)
    out = tmp_path / "cli-out"
    done = aggregate_cli("--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(out.resolve()) in done.stdout
    assert (out / "summary.md").exists() and (out / "tables" / "energy_gross.csv").exists()
    # The headline tables on the terminal, as in summary.md: energy, then CO2e, per 1,000 inferences.
    summary = (out / "summary.md").read_text()
    for title in ("Energy per 1,000 inferences, gross [J]", "CO2e per 1,000 inferences [g]"):
        table = summary.split(f"## {title}\n\n")[1].split("\n\n")[0]
        assert f"{title}\n\n{table}\n" in done.stdout


def test_cli_unknown_experiment_is_one_line_and_exit_2(runs, store, tmp_path, capsys):
    grid(runs)
    done = aggregate_cli("--experiment", "nope", "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nope" in done.stderr
    assert "Traceback" not in done.stderr
    # the same in process
    assert main(["--experiment", "nope", "--tracking-uri", store]) == 2
    assert "nope" in capsys.readouterr().err


def test_selection_study_lists_every_arm_of_the_latest_selection_job():
    from ecopipe.aggregation.derived import selection_study

    def arm(name: str, accuracy: float, energy: float, savings: float) -> dict[str, float]:
        metric = f"selection.{name}."
        return {
            metric + "accuracy": accuracy,
            metric + "accuracy_delta_vs_reference": accuracy - 0.96,
            metric + "energy_per_1k_j": energy,
            metric + "energy_per_1k_ci95_j": 0.1,
            metric + "savings_measured_vs_reference": savings,
            metric + "savings_measured_vs_reference_ci95_low": savings - 0.05,
            metric + "savings_measured_vs_reference_ci95_high": savings + 0.05,
            metric + "savings_measured_vs_costliest": savings,
        }

    base = {"model": "pool:digits_hard", "hardware": "T4", "source": "nvml_counter+rapl"}
    old = {**base, "strategy": "router", "start_time": 1, **arm("member_tree", 0.5, 9.0, 0.0)}
    new = {
        **base,
        "strategy": "cascade:balanced",
        "start_time": 2,
        **arm("member_tree", 0.7, 1.0, 0.75),
        **arm("member_forest", 0.96, 4.0, 0.0),
        **arm("cascade_balanced", 0.95, 2.0, 0.5),
        "selection.savings_measured_vs_reference": 0.5,  # the job's own strategy, not an arm row
    }
    single = {**base, "model": "gpt2", "strategy": "single", "start_time": 3, "energy_per_1k_gross_j": 9.0}
    study = selection_study(pd.DataFrame([old, new, single])).set_index("arm")
    assert list(study.index) == ["cascade_balanced", "member_forest", "member_tree"]
    assert study.loc["member_tree", "savings vs reference"] == pytest.approx(0.75)
    assert study.loc["cascade_balanced", "energy per 1,000 (J)"] == 2.0
    assert study.loc["cascade_balanced", "savings vs reference, 95% low"] == pytest.approx(0.45)
    assert study.loc["cascade_balanced", "accuracy vs reference"] == pytest.approx(-0.01)


def test_decode_energy_is_generate_minus_prefill_per_decode_step():
    from ecopipe.aggregation.derived import decode_energy

    cells = pd.DataFrame(
        [
            {
                "model": "opt-125m",
                "precision": "fp16",
                "phase": "generate",
                "hardware": "H100",
                "energy_per_1k_gross_j": 33_000.0,
                "max_new_tokens": 32.0,
            },
            {
                "model": "opt-125m",
                "precision": "fp16",
                "phase": "prefill",
                "hardware": "H100",
                "energy_per_1k_gross_j": 2_000.0,
                "max_new_tokens": 32.0,
            },
            {
                "model": "gpt2",
                "precision": "fp16",
                "phase": "generate",
                "hardware": "H100",
                "energy_per_1k_gross_j": 9_000.0,
                "max_new_tokens": 32.0,
            },  # no prefill run: no decode row
        ]
    )
    table = decode_energy(cells, ["model", "phase", "precision"], ["H100"])
    assert list(table["model"]) == ["opt-125m"]
    # (33 J - 2 J) per prompt over 31 decode steps = 1 J per decoded token
    assert table["H100"].iloc[0] == pytest.approx(1.0)
    assert decode_energy(cells, ["model", "precision"], ["H100"]).empty  # one phase only: no table


def test_cli_without_arguments_takes_the_latest_sweep_and_says_which(runs, store, tmp_path):
    older = runs.sweep()
    runs.job("mlp", metrics=figures(50.0), sweep=older)
    newer = runs.sweep()
    grid(runs, newer)
    done = aggregate_cli("--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        f"aggregating the latest sweep {newer}" in done.stdout and f"experiment {EXPERIMENT}" in done.stdout
    )
    assert "--sweep PARENT_RUN_ID picks another" in done.stdout
    runs_read = pd.read_csv(tmp_path / "aggregate" / f"{EXPERIMENT}-{newer[:8]}" / "data" / "runs.csv")
    assert set(runs_read["model"]) == {"logistic_regression"}  # the older sweep's mlp is not in it
