"""What a study reports: savings with intervals, every arm measured alike, the Pareto figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ecopipe.config import Attribution
from ecopipe.monitor.stats import estimate
from ecopipe.selection import study
from ecopipe.selection.pareto import area_under
from ecopipe.selection.workload import MEMBER_PREFIX


def test_savings_carry_a_95_percent_interval():
    arm = estimate([1.0, 1.1, 0.9, 1.05, 0.95])
    reference = estimate([10.0, 11.0, 9.0, 10.5, 9.5])
    saved = study.savings(arm, reference)
    assert saved.value == pytest.approx(0.9)
    assert saved.low < 0.9 < saved.high and saved.high - saved.low < 0.05
    noisy = study.savings(estimate([0.6, 1.4, 1.0, 0.7, 1.3]), reference)
    assert noisy.high - noisy.low > saved.high - saved.low
    assert math.isnan(study.savings(estimate([1.0]), reference).low)  # one trial: no interval claimed
    right = np.array([1, 1, 0, 1] * 50, dtype=bool)
    delta = study.accuracy_difference(right, np.ones(200, dtype=bool))
    assert delta.value == pytest.approx(-0.25) and delta.low < -0.25 < delta.high


def test_every_member_and_strategy_is_measured_alike_in_one_job(study_run, tmp_path):
    workload, inference, findings = study_run
    members = {f"{MEMBER_PREFIX}{m.name}" for m in workload.members}
    strategies = set(workload.plans) - {workload.headline}
    assert set(inference.arms) == members | strategies
    for name, arm in inference.arms.items():
        assert len(arm.trials) == len(inference.trials), name  # the same protocol
        # What ran in the window answered as the members' outputs say it should.
        assert arm.quality["accuracy"] == pytest.approx(workload.right_on_test(name).mean()), name
        # Ledger energy is exact: the measured arm is what its pass was charged.
        runner = workload.runner_for(name)
        assert arm.per_1k_samples().mean == pytest.approx(
            runner.accounting(workload.costs).per_1k_j, rel=1e-9
        )
    m = findings.metrics
    reference = f"{MEMBER_PREFIX}{workload.members[workload.reference].name}"
    costliest = f"{MEMBER_PREFIX}{workload.members[-1].name}"
    energy = {n: a.per_1k_samples().mean for n, a in inference.arms.items()}
    energy[workload.headline] = inference.per_1k_samples(Attribution.gross).mean
    for name in energy:
        assert m[f"selection.{name}.savings_measured_vs_reference"] == pytest.approx(
            1 - energy[name] / energy[reference]
        )
        assert m[f"selection.{name}.savings_measured_vs_costliest"] == pytest.approx(
            1 - energy[name] / energy[costliest]
        )
        assert f"selection.{name}.savings_measured_vs_reference_ci95_low" in m
    assert m[f"selection.{reference}.savings_measured_vs_reference"] == 0.0
    # The accounting's savings carry their own name; with exact ledger energy the two agree here.
    assert m["selection.savings_accounted_vs_reference"] == pytest.approx(
        m["selection.savings_measured_vs_reference"]
    )
    assert (
        m["selection.savings_measured_vs_reference"]
        == m[f"selection.{workload.headline}.savings_measured_vs_reference"]
    )
    assert 0 < m["selection.pareto_auc"] <= m["selection.oracle_pareto_auc"] <= 1
    names = sorted(p.name for p in findings.files)
    assert names == ["pareto.csv", "pareto.png", "selection.json"]
    png = next(p for p in findings.files if p.suffix == ".png")
    assert png.stat().st_size > 10_000
    table = json.loads(next(p for p in findings.files if p.suffix == ".json").read_text())
    assert {row["arm"] for row in table["arms"]} == set(energy)


def test_pareto_area_on_a_known_curve():
    # best accuracy within e: 0 on [0,1), 0.5 on [1,2), 0.9 on [2,4]; normalised by 4
    assert area_under([0.5, 0.9, 0.8], [1.0, 2.0, 3.0], 4.0) == pytest.approx((0.5 * 1 + 0.9 * 2) / 4)


def test_pareto_axis_names_what_the_markers_are(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from ecopipe.selection.pareto import CurvePoint, MeasuredPoint, plot_study

    labels: list[str] = []
    real = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, text, *a, **k: labels.append(text) or real(ax, text))
    frontier = (np.array([0.0, 0.9]), np.array([0.001, 0.002]))
    curve = [CurvePoint(0.5, 0.9, 0.002, True)]
    points = {"member:a": MeasuredPoint(2.0, 1.5, 2.5, 0.9, True)}
    plot_study(tmp_path / "p.png", frontier, curve, points, "member:a", "t", "n", "ESTIMATE")
    assert labels == ["energy per 1,000 inferences (J, log scale); markers: ESTIMATE, with their band"]


def test_pareto_keys_arms_by_kind_and_number_and_explains_the_priced_curve(tmp_path, monkeypatch):
    """A colour per kind of arm (not per arm), a number beside each marker with its name in the key,
    and a caption saying the dashed curve is an accounting, not a measurement."""
    from matplotlib.figure import Figure

    from ecopipe.selection.pareto import CurvePoint, MeasuredPoint, plot_study

    figures, real = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or real(fig, *a, **k))
    arms = ["member_a", "member_b", "member_c", "cascade_x", "cascade_y", "router_z", "oracle"]
    points = {name: MeasuredPoint(1.0 + i, 0.5 + i, 1.5 + i, 0.9, name.startswith("member")) for i, name in
              enumerate(arms)}  # fmt: skip
    curve = [CurvePoint(0.5, 0.9, 0.002, True)]
    plot_study(tmp_path / "p.png", (np.array([0.0, 0.9]), np.array([0.001, 0.002])), curve, points,
               "member_c", "t", "n", "ESTIMATE")  # fmt: skip
    (fig,) = figures
    ax = fig.axes[0]
    key = [t.get_text() for t in ax.get_legend().get_texts()]
    assert key[:2] == ["oracle frontier (priced bound)", "cascade curve, one shared threshold (priced)"]
    assert key[2:] == [
        f"{i}  {n}{' (reference)' if n == 'member_c' else ''}" for i, n in enumerate(arms, start=1)
    ]
    # What the markers' energy is, from the job's label: an estimate is never called measured.
    assert ax.get_legend().get_title().get_text() == "arms, energy from their own windows: ESTIMATE"
    assert not any("measured" in text for text in key)
    colours = {n: h.get_color() for n, h in zip(arms, ax.get_legend().legend_handles[2:], strict=True)}
    assert colours["member_a"] == colours["member_b"] == colours["member_c"] != colours["cascade_x"]
    assert colours["cascade_x"] == colours["cascade_y"] and len(set(colours.values())) == 4
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(i) for i in range(1, 8))
    assert any("accounting, not a measurement" in t.get_text() for t in fig.texts)
