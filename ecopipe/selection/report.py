"""What a selection study found: each arm's measured savings and accuracy against the reference.

Savings are a ratio of two measured energies (the job's strategy and each arm run in the same trials,
over the same test split), with a 95% interval (`study`). The per-member accounting (fitted costs x
the calls and rows each pass really ran) is reported beside each measurement as a cross-check,
flagged beyond ACCOUNTING_TOLERANCE. The Pareto figure sets the measured arms against the cascade's
priced curve and the oracle's frontier.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ecopipe.config import Attribution
from ecopipe.monitor.stats import estimate
from ecopipe.names import HIGH, LOW, ArmMetric, MetricFamily, arm_metric
from ecopipe.results import ESTIMATE, MEASURED, SIMULATED, Findings
from ecopipe.selection import study
from ecopipe.selection.oracle import oracle_frontier
from ecopipe.selection.pareto import MeasuredPoint, area_under, cascade_curve, curve_csv, plot_study
from ecopipe.selection.strategies.member import MEMBER_PREFIX
from ecopipe.selection.thresholds import evaluate, shared_grid, terminal_at

if TYPE_CHECKING:
    from ecopipe.config import PoolConfig, StrategyConfig
    from ecopipe.results import InferenceResult
    from ecopipe.selection.costs import MemberCost, Prices
    from ecopipe.selection.members import Member
    from ecopipe.selection.runners import Runner
    from ecopipe.selection.strategies.base import Policy, View

log = logging.getLogger(__name__)


class Study(Protocol):
    """What the report reads of a fitted and measured study (`workload.SelectionWorkload`)."""

    headline: str  # the job's own arm
    members: list[Member]  # cheapest first
    reference: int
    costs: dict[str, MemberCost]
    batch_size: int
    truth: np.ndarray
    pool: PoolConfig
    strategy: StrategyConfig
    validation_b: View | None

    @property
    def evaluation(self) -> View: ...

    def prices(self) -> Prices: ...

    def policy(self, name: str) -> Policy: ...

    def runner_for(self, name: str) -> Runner: ...

    def right_on_test(self, name: str) -> np.ndarray: ...


# The accounting is fitted on other rows in other, shorter windows: it is a cross-check, and is
# flagged when it misses the measured window by more than this share of it.
ACCOUNTING_TOLERANCE = 0.25
PARITY_GOAL_PP = 0.5  # the summary names the cheapest arm within this loss of the reference on test


def findings(study_: Study, result: InferenceResult, folder: Path) -> Findings:
    """Every arm's measured energy, savings and accuracy difference against the reference, as
    `selection.<arm>.*` metrics, the summary's lines, and the study's files (Pareto figure, curve, JSON)."""
    measured = {name: arm.per_1k_samples() for name, arm in result.arms.items()}
    measured[study_.headline] = result.per_1k_samples(Attribution.gross)
    bands = {name: arm.per_1k_band() for name, arm in result.arms.items()}
    bands[study_.headline] = result.per_1k_bands(Attribution.gross)["total"]
    seconds = {name: arm.seconds_per_1k_samples() for name, arm in result.arms.items()}
    seconds[study_.headline] = estimate([t.window.duration_s * 1000 / t.samples for t in result.trials])
    accuracy = {name: arm.quality["accuracy"] for name, arm in result.arms.items()}
    accuracy[study_.headline] = result.quality["accuracy"]
    reference = f"{MEMBER_PREFIX}{study_.members[study_.reference].name}"
    costliest = f"{MEMBER_PREFIX}{study_.members[-1].name}"
    reference_right = study_.right_on_test(reference)
    metrics: dict[str, float] = {}
    rows = []
    for name in measured:
        vs_reference = study.savings(measured[name], measured[reference])
        vs_costliest = study.savings(measured[name], measured[costliest])
        delta = study.accuracy_difference(study_.right_on_test(name), reference_right)
        row: dict[str, Any] = {
            "arm": name,
            ArmMetric.ACCURACY: accuracy[name],
            ArmMetric.ENERGY_PER_1K: measured[name].mean,
            ArmMetric.ENERGY_PER_1K_CI95: measured[name].ci95,
            f"{ArmMetric.ENERGY_PER_1K}{LOW}": bands[name].low,  # the band: coefficients' range and the CI
            f"{ArmMetric.ENERGY_PER_1K}{HIGH}": bands[name].high,
            ArmMetric.ACCURACY_DELTA_VS_REFERENCE: delta,
            ArmMetric.SAVINGS_VS_REFERENCE: vs_reference,
            ArmMetric.SAVINGS_VS_COSTLIEST: vs_costliest,
            "time_savings_vs_reference": study.savings(seconds[name], seconds[reference]),
        }
        row |= cross_check(study_, name, measured[name].mean)
        rows.append(row)
    accounted_reference = next(r for r in rows if r["arm"] == reference)["energy_per_1k_accounted_j"]
    for row in rows:
        # The accounting's savings, named apart from the measured ones: prices x calls and rows.
        row["savings_accounted_vs_reference"] = 1 - row["energy_per_1k_accounted_j"] / accounted_reference
        metrics |= _row_metrics(row)
    # The job's own strategy also under the bare names, for tables across jobs.
    own = arm_metric(study_.headline, "")
    metrics |= {
        MetricFamily.SELECTION.of(k.removeprefix(own)): v for k, v in metrics.items() if k.startswith(own)
    }
    curve, frontier, areas = _curves(study_)
    metrics |= {
        MetricFamily.SELECTION.of("reference_accuracy"): accuracy[reference],
        MetricFamily.SELECTION.of("reference_energy_per_1k_j"): measured[reference].mean,
        MetricFamily.SELECTION.of("pareto_auc"): areas[0],
        MetricFamily.SELECTION.of("oracle_pareto_auc"): areas[1],
        MetricFamily.SELECTION.of("energy_estimated"): float(result.is_estimate),
    }
    summary = _summary(study_, result, rows, reference, costliest)
    files = _write_files(study_, folder, rows, curve, frontier, areas, reference, result)
    return Findings(metrics, tuple(summary), tuple(files))


def cross_check(study_: Study, name: str, measured_per_1k: float) -> dict[str, float]:
    """The accounting (fitted costs x what the last pass ran) against the measured window."""
    accounted = study_.runner_for(name).accounting(study_.costs, study_.policy(name).overhead).per_1k_j
    gap = accounted / measured_per_1k - 1 if measured_per_1k else math.nan
    if abs(gap) > ACCOUNTING_TOLERANCE:
        log.warning(
            "%s: the per-member accounting says %.4g J per 1,000, its measured windows %.4g (%+.0f%%, "
            "beyond the %.0f%% tolerance): the fitted costs (validation rows, short windows) do not "
            "describe this pass; the windows are the measurement.",
            name,
            accounted,
            measured_per_1k,
            100 * gap,
            100 * ACCOUNTING_TOLERANCE,
        )
    return {
        "energy_per_1k_accounted_j": accounted,
        "accounting_gap_rel": gap,
        "accounting_within_tolerance": float(abs(gap) <= ACCOUNTING_TOLERANCE),
    }


def _curves(study_: Study) -> tuple[list, tuple[np.ndarray, np.ndarray], tuple[float, float]]:
    assert study_.validation_b is not None
    view, prices = study_.evaluation, study_.prices()
    grid = shared_grid(study_.validation_b.conf[: study_.reference], study_.strategy.threshold_grid)
    curve = cascade_curve(view.conf, view.correct, prices, grid, study_.reference)
    reference_j = evaluate(
        terminal_at(len(study_.members), study_.reference), view.conf, view.correct, prices
    )
    frontier = oracle_frontier(view.correct, prices.per_sample)
    energy_max = reference_j.energy_j_per_sample
    areas = (
        area_under([p.accuracy for p in curve], [p.energy_j_per_sample for p in curve], energy_max),
        area_under(frontier[0], frontier[1], energy_max),
    )
    return curve, frontier, areas


def _summary(
    study_: Study,
    result: InferenceResult,
    rows: list[dict[str, Any]],
    reference: str,
    costliest: str,
) -> list[str]:
    by_name = {r["arm"]: r for r in rows}
    ref = by_name[reference]
    assert study_.validation_b is not None
    lines = [
        f"  reference   {reference.removeprefix(MEMBER_PREFIX)}: the most accurate member on "
        f"validation B ({study_.validation_b.correct[study_.reference].mean():.4f}); on test accuracy "
        f"{ref['accuracy']:.4f}, "
        f"{ref['energy_per_1k_j']:.4g} J per 1,000 ({ref['energy_per_1k_j_low']:.3g}–"
        f"{ref['energy_per_1k_j_high']:.3g}, {result.figures_label}, gross)"
    ]

    def describe(row: dict[str, Any]) -> str:
        delta = row["accuracy_delta_vs_reference"]
        return (
            f"accuracy {row['accuracy']:.4f} ({100 * delta.value:+.2f} pp [{100 * delta.low:+.2f}, "
            f"{100 * delta.high:+.2f}] vs reference), {row['energy_per_1k_j']:.4g} J per 1,000; "
            f"savings vs reference {row['savings_measured_vs_reference'].percent()}, vs costliest "
            f"({costliest.removeprefix(MEMBER_PREFIX)}) {row['savings_measured_vs_costliest'].percent()}"
        )

    lines.append(f"  {study_.headline} (this job): {describe(by_name[study_.headline])}")
    strategies = [r for r in rows if not r["arm"].startswith(MEMBER_PREFIX) and r["arm"] != "oracle"]
    parity = [r for r in strategies if r["accuracy_delta_vs_reference"].value >= -PARITY_GOAL_PP / 100]
    if parity:
        best = max(parity, key=lambda r: r["savings_measured_vs_reference"].value)
        lines.append(f"  best within {PARITY_GOAL_PP} pp on test: {best['arm']}: {describe(best)}")
    else:
        lines.append(f"  no strategy stays within {PARITY_GOAL_PP} pp of the reference on test")
    if result.is_estimate:
        time_row = by_name[study_.headline]["time_savings_vs_reference"]
        lines.append(
            f"  energy is ESTIMATED ({', '.join(result.estimated)}: no counter), so these savings are time "
            f"savings: {study_.headline} saves {time_row.percent()} of the reference's time per input"
        )
    return lines


def _write_files(
    study_: Study,
    folder: Path,
    rows: list[dict[str, Any]],
    curve: list,
    frontier: tuple[np.ndarray, np.ndarray],
    areas: tuple[float, float],
    reference: str,
    result: InferenceResult,
) -> list[Path]:
    out = folder / "selection"
    out.mkdir(parents=True, exist_ok=True)
    points = {
        r["arm"]: MeasuredPoint(
            r["energy_per_1k_j"],
            r["energy_per_1k_j_low"],
            r["energy_per_1k_j_high"],
            r["accuracy"],
            r["arm"].startswith(MEMBER_PREFIX),
        )
        for r in rows
    }

    label = result.figures_label
    title = (
        f"pool {study_.pool.name}: {len(study_.truth)} test rows, batch {study_.batch_size}; "
        f"area: cascade curve {areas[0]:.3f}, oracle {areas[1]:.3f}"
    )
    note = {
        MEASURED: "energy measured by counters",
        ESTIMATE: "energy ESTIMATED (no counter): it follows the CPU time and memory of each arm",
    }.get(result.figures, f"energy {label}: from a simulated sensor")
    if result.whole_gpu and result.figures != SIMULATED:
        note += "; the GPU's is the WHOLE GPU's (MIG): every instance's work, not the arms' own"
    png = plot_study(out / "pareto.png", frontier, curve, points, reference, title, note, label)
    csv = out / "pareto.csv"
    csv.write_text(curve_csv(curve))
    table = [
        {k: (v.__dict__ if isinstance(v, study.Interval) else v) for k, v in row.items()} for row in rows
    ]
    summary = {
        "strategy": study_.headline,
        "reference": reference,
        "order": [m.name for m in study_.members],
        "costs": {
            n: {"per_call_j": c.joules_per_call, "per_row_j": c.joules_per_row}
            for n, c in study_.costs.items()
        },
        "arms": table,
        "pareto_auc": areas[0],
        "oracle_pareto_auc": areas[1],
    }
    summary_path = out / "selection.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=float))
    return [csv, png, summary_path]


def _row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """One arm's row as `selection.<arm>.<key>` metrics; an interval gives its value and bounds."""
    metrics: dict[str, float] = {}
    for key, value in row.items():
        name = arm_metric(row["arm"], key)
        if isinstance(value, study.Interval):
            metrics |= value.as_metrics(name)
        elif key != "arm":
            metrics[name] = value
    return metrics
