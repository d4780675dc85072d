"""Every comparison table from the tidy job runs (`build`): a row per config, a column per hardware.

The runs' row key and each cell's run are rows.py's; the tables that show one figure are specs.py's,
the ones computed from several figures derived.py's, and pivot.py makes each wide.

Every table has the same rows in the same order, one per row key (the decode, selection and
differences tables, built on other keys, aside). A figure a run lacks is text saying why (NOT_LOGGED,
"not defined", NO_BASELINE), never a missing row; a blank cell is a hardware on which the row has no
run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from ecopipe import names
from ecopipe.aggregation import specs
from ecopipe.aggregation.derived import (
    BASELINE,
    decode_energy,
    impact_factors,
    precision_gain,
    run_spread,
    selection_study,
)
from ecopipe.aggregation.differences import METHOD, differences
from ecopipe.aggregation.pivot import NOT_LOGGED, by_dataset, figure, key_columns, numbers, pivot
from ecopipe.aggregation.rows import ALWAYS, keyed, latest
from ecopipe.aggregation.specs import (
    DECODE_TABLE,
    DIFFERENCES_TABLE,
    ESS_TABLE,
    FACTORS_TABLE,
    GAIN_TABLE,
    HIGH_SUFFIX,
    LOW_SUFFIX,
    RUNS_SUFFIX,
    SELECTION_TABLE,
    SOURCE_TABLE,
    SPREAD_SUFFIX,
    quality_specs,
)
from ecopipe.monitor.stats import unresolved
from ecopipe.names import GROSS


@dataclass
class Tables:
    tables: dict[str, pd.DataFrame]
    titles: dict[str, str]
    dims: list[str]
    hardware: list[str]
    cells: pd.DataFrame  # the run behind each cell
    superseded: int


def build(jobs: pd.DataFrame) -> Tables:
    finished = jobs[jobs["status"] == "FINISHED"]
    if finished.empty:
        return Tables({}, {}, list(ALWAYS), [], finished, 0)
    finished, dims = keyed(finished)
    cells = latest(finished, dims)
    hardware = sorted(cells["hardware"].unique())
    tables: dict[str, pd.DataFrame] = {}
    titles: dict[str, str] = {}

    def add(name: str, values: pd.Series, title: str) -> None:
        tables[name] = pivot(cells.assign(value=values), dims, "value", hardware)
        titles[name] = title

    def logged(metric: str) -> bool:
        return metric in cells and cells[metric].notna().any()

    for spec in (*specs.SPECS, *quality_specs(cells)):
        values = figure(cells, spec.metric, spec.undefined)
        if values.eq(NOT_LOGGED).all():
            continue
        add(spec.name, values, spec.title)
        if spec.name == ESS_TABLE:
            tables[ESS_TABLE] = by_dataset(tables[ESS_TABLE])
        if spec.ci95 and logged(spec.ci95):
            # Named <table>_ci95: render puts each half-width beside its value.
            add(f"{spec.name}_ci95", figure(cells, spec.ci95), f"{spec.title}: 95% CI half-width")
            spread = run_spread(finished, dims, spec.metric, hardware)
            if spread is not None:  # named <table>_runs and <table>_spread: render writes them beside it
                tables[spec.name + RUNS_SUFFIX], tables[spec.name + SPREAD_SUFFIX] = spread
                titles[spec.name + RUNS_SUFFIX] = f"{spec.title}: FINISHED runs per cell"
                titles[spec.name + SPREAD_SUFFIX] = f"{spec.title}: between-run coefficient of variation"
        for suffix in (LOW_SUFFIX, HIGH_SUFFIX):  # named <table>_low / _high: render writes the band
            if spec.energy and logged(f"{spec.metric}{suffix}"):
                band = figure(cells, f"{spec.metric}{suffix}")
                add(spec.name + suffix, band, f"{spec.title}: band, {suffix.strip('_')} end")
    add(
        SOURCE_TABLE,
        cells["source"],
        "Energy source of each cell (estimated_* = estimate, fake = simulated, NOT METERED = left out of "
        "the total)",
    )
    factors = impact_factors(cells)
    if factors.notna().any():
        add(
            FACTORS_TABLE,
            factors.fillna(NOT_LOGGED),
            "Factors behind each cell's CO2e and water: carbon intensity (basis, year), PUE (range), "
            "water basis",
        )
    decode = decode_energy(cells, dims, hardware)
    if not decode.empty:
        tables[DECODE_TABLE] = decode
        titles[DECODE_TABLE] = (
            "Energy per decoded token, gross [J]: (generate - prefill) / (max_new_tokens - 1); "
            "energy sources: those of the two phases' rows in the energy tables"
        )
    study = selection_study(cells)
    if not study.empty:
        tables[SELECTION_TABLE] = study
        titles[SELECTION_TABLE] = (
            "Dynamic selection: members alone and strategies, in the same protocol (gross J; the source "
            "column says whether the energy was measured or estimated)"
        )
    compared = differences(finished, dims, names.energy_per_1k(GROSS))
    if not compared.empty:
        tables[DIFFERENCES_TABLE] = compared
        titles[DIFFERENCES_TABLE] = (
            "Differences in one axis: energy per 1,000 inferences, gross, of a over b with its 95% interval "
            f"from each cell's FINISHED runs ({METHOD}); a is lower or higher where the interval excludes 1"
        )
    if "ess" in tables and (tables["ess"]["precision"] != BASELINE).any():
        tables[GAIN_TABLE] = precision_gain(tables["ess"], dims, hardware)
        titles[GAIN_TABLE] = f"Precision gain: ESS relative to {BASELINE} on the same hardware [x]"
    return Tables(tables, titles, dims, hardware, cells, len(finished) - len(cells))


def unresolved_cells(tables: Mapping[str, pd.DataFrame]) -> int:
    """Cells whose 95% CI (their table's `_ci95` companion) is over half the figure (stats.unresolved)."""
    count = 0
    for name, table in tables.items():
        ci95 = tables.get(f"{name}_ci95")
        if ci95 is None or name.endswith("_ci95"):
            continue
        hardware = [c for c in table.columns if c not in key_columns(table)]
        values, halves = numbers(table[hardware]).to_numpy(), numbers(ci95[hardware]).to_numpy()
        count += sum(unresolved(v, h) for v, h in zip(values.ravel(), halves.ravel(), strict=True))
    return count
