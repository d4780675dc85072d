"""Tables computed from more than one figure of a cell: the precision gain (ESS over the fp32 row's),
energy per decoded token (two phases' rows), the selection study (every arm of a selection job), the
runs behind each cell and their spread, and the factors behind each cell's CO2e and water.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecopipe import names
from ecopipe.aggregation.pivot import pivot
from ecopipe.config import Precision
from ecopipe.names import CI95_HIGH, CI95_LOW, GROSS, HIGH, LOW, ArmMetric, Metric, MetricFamily, arm_metric

BASELINE = Precision.fp32.value
NO_BASELINE = f"no {BASELINE} run to compare with"


def precision_gain(ess: pd.DataFrame, dims: list[str], hardware: list[str]) -> pd.DataFrame:
    """ESS of each row over its fp32 row's (the same key but for precision) on the same hardware, so
    fp32 rows read 1. A cell whose row has a run there but no ratio says why: its own ESS's text,
    `fp32 ESS <text>`, or NO_BASELINE."""
    others = [d for d in dims if d != "precision"]
    base = ess.loc[ess["precision"] == BASELINE, [*others, *hardware]]
    text = {k: "str" for k in others}
    reference = ess[others].astype(text).merge(base.astype(text), on=others, how="left")

    def one(own: object, fp32: object) -> object:
        if isinstance(own, str) or pd.isna(own):  # a reason, or no run: as the ESS table has it
            return own
        if isinstance(fp32, str):
            return f"{BASELINE} ESS {fp32}"
        return NO_BASELINE if pd.isna(fp32) else own / fp32

    gain = ess[dims].copy()
    for hw in hardware:
        gain[hw] = [one(own, fp32) for own, fp32 in zip(ess[hw], reference[hw], strict=True)]
    return gain.infer_objects()


def selection_study(cells: pd.DataFrame) -> pd.DataFrame:
    """The latest selection job of each pool and hardware: every arm it measured in the same protocol
    (each member alone, each strategy; `selection.<arm>.*`), with savings measured against the
    reference (the most accurate member on validation B) and the costliest member, 95% intervals."""
    chosen = cells[cells["strategy"] != "single"]
    rows = []
    for (pool, hardware), group in chosen.groupby(["model", "hardware"], sort=True):
        run = group.sort_values("start_time").iloc[-1]
        arms = [
            c.removeprefix(MetricFamily.SELECTION).removesuffix(f".{ArmMetric.ENERGY_PER_1K}")
            for c in group.columns
            if c.startswith(MetricFamily.SELECTION)
            and c.count(".") == 2
            and c.endswith(f".{ArmMetric.ENERGY_PER_1K}")
        ]
        for arm in sorted(a for a in arms if pd.notna(run[arm_metric(a, ArmMetric.ENERGY_PER_1K)])):
            metric = arm_metric(arm, "")
            rows.append(
                {
                    "pool": pool,
                    "hardware": hardware,
                    "arm": arm,
                    "accuracy": run[metric + ArmMetric.ACCURACY],
                    "accuracy vs reference": run[metric + ArmMetric.ACCURACY_DELTA_VS_REFERENCE],
                    "energy per 1,000 (J)": run[metric + ArmMetric.ENERGY_PER_1K],
                    "energy 95% CI (J)": run[metric + ArmMetric.ENERGY_PER_1K_CI95],
                    # the band (an estimate's coefficient range and the CI); runs logged before it: none
                    "energy low (J)": run.get(metric + ArmMetric.ENERGY_PER_1K + LOW),
                    "energy high (J)": run.get(metric + ArmMetric.ENERGY_PER_1K + HIGH),
                    "source": run["source"],
                    "savings vs reference": run[metric + ArmMetric.SAVINGS_VS_REFERENCE],
                    "savings vs reference, 95% low": run[metric + ArmMetric.SAVINGS_VS_REFERENCE + CI95_LOW],
                    "savings vs reference, 95% high": run[
                        metric + ArmMetric.SAVINGS_VS_REFERENCE + CI95_HIGH
                    ],
                    "savings vs costliest": run[metric + ArmMetric.SAVINGS_VS_COSTLIEST],
                }
            )
    return pd.DataFrame(rows)


def decode_energy(cells: pd.DataFrame, dims: list[str], hardware: list[str]) -> pd.DataFrame:
    """Joules per decoded token: (generate - prefill) per prompt / (max_new_tokens - 1), gross.

    A `phase=generate` run makes one prefill pass and max_new_tokens - 1 decode steps per prompt; a
    `phase=prefill` run of the same row and hardware makes the prefill pass alone. Rows lacking
    either phase are left out, never estimated.
    """
    if "phase" not in dims:
        return pd.DataFrame()
    others = [d for d in dims if d != "phase"]
    per_prompt = cells.assign(j_per_prompt=cells[names.energy_per_1k(GROSS)] / 1000)
    generate = per_prompt[per_prompt["phase"] == "generate"].set_index([*others, "hardware"])
    prefill = per_prompt[per_prompt["phase"] == "prefill"].set_index([*others, "hardware"])
    both = generate.join(prefill[["j_per_prompt"]], rsuffix="_prefill", how="inner")
    steps = both["max_new_tokens"] - 1
    both = both.assign(decode_j_per_token=(both["j_per_prompt"] - both["j_per_prompt_prefill"]) / steps)
    both = both[steps > 0].reset_index()
    if both.empty:
        return pd.DataFrame()
    return pivot(both, others, "decode_j_per_token", hardware)


def run_spread(
    finished: pd.DataFrame, dims: list[str], metric: str, hardware: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Runs per cell and their between-run coefficient of variation, where any cell has repeats.

    A cell's runs (the same row key and hardware: one config, measured again or with another seed)
    measure the same thing; their spread shows what a single run's 95% CI (over its trials only)
    cannot: drift between runs on a shared or throttling machine. Every row key has its row; a count
    of runs with the figure, 0 where none has it.
    """
    stats = finished.groupby([*dims, "hardware"])[metric].agg(["count", "mean", "std"]).reset_index()
    if stats.empty or stats["count"].max() < 2:
        return None
    stats["cv"] = stats["std"] / stats["mean"].abs()
    return pivot(stats, dims, "count", hardware), pivot(stats, dims, "cv", hardware)


def impact_factors(cells: pd.DataFrame) -> pd.Series:
    """Per run, the factors its CO2e and water rest on, in words: `473 g/kWh lifecycle 2024; PUE 1.56
    (1.55-1.63); water consumption`. Runs logged before these tags existed read what they have."""

    def one(row: pd.Series) -> float | str:
        intensity = row.get(Metric.CARBON_INTENSITY)
        if intensity is None or pd.isna(intensity):
            return np.nan
        year = row.get("carbon_year")
        carbon = f"{intensity:.4g} g/kWh {row.get('carbon_basis') or 'basis not recorded'}"
        carbon += f" {year}" if isinstance(year, str) and year else ", year not recorded"
        pue = f"PUE {row[Metric.PUE]:.3g}" if pd.notna(row.get(Metric.PUE)) else "PUE not recorded"
        low, high = (row.get(name) for name in names.band(Metric.PUE)[1:])
        if low is not None and high is not None and pd.notna(low) and pd.notna(high):
            pue += f" ({low:.3g}-{high:.3g})"
        water = row.get("water_basis")
        return f"{carbon}; {pue}; water {water if isinstance(water, str) and water else 'basis not recorded'}"

    return cells.apply(one, axis=1) if len(cells) else pd.Series(dtype="object")
