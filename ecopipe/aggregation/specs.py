"""The tables that show one figure of each cell's run, as specs (SPECS: a new table is one TableSpec; a
quality table per headline quality figure), and the names of the tables build derives and of every
table's companions (`_ci95`, `_runs`, `_spread`, `_low`, `_high`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ecopipe import names
from ecopipe.names import CO2E_PER_1K, GROSS, NET, WATER_PER_1K, Metric, MetricFamily
from ecopipe.report import HEADLINE_QUALITY


@dataclass(frozen=True)
class TableSpec:
    name: str
    metric: str
    title: str
    energy: bool  # derived from measured energy: its energy source is stated with it
    ci95: str | None = None
    unit: str | None = None  # SI unit the cells are written in with a prefix (29.4 mJ); None: plain
    # A tag column whose "not defined: ..." text fills the cell of a run that has no value, so that an
    # undefined figure (ESS over CO2e <= 0) reads as such instead of as a missing run.
    undefined: str | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The metrics the table is built from: its figure, its CI, an energy figure's band (load.py reads
        them, so that a new table is its spec alone)."""
        band = (f"{self.metric}{LOW_SUFFIX}", f"{self.metric}{HIGH_SUFFIX}") if self.energy else ()
        return (self.metric, *([self.ci95] if self.ci95 else []), *band)


SPECS = (
    TableSpec(
        "energy_gross",
        names.energy_per_1k(GROSS),
        "Energy per 1,000 inferences, gross [J]",
        True,
        names.energy_per_1k_ci95(GROSS),
        "J",
    ),
    TableSpec(
        "energy_net",
        names.energy_per_1k(NET),
        "Energy per 1,000 inferences, net of idle [J]",
        True,
        names.energy_per_1k_ci95(NET),
        "J",
    ),
    TableSpec(
        "energy_tokens",
        names.energy_per_1k_tokens(GROSS),
        "Energy per 1,000 tokens, gross [J]",
        True,
        None,
        "J",
    ),
    TableSpec("co2e", CO2E_PER_1K, "CO2e per 1,000 inferences [g]", True, Metric.CO2E_CI95_PER_1K, "g"),
    TableSpec("water", WATER_PER_1K, "Water per 1,000 inferences, on-site + off-site [L]", True, None, "L"),
    TableSpec(
        "ess",
        Metric.ESS,
        "ESS: effective parameters (M) per g CO2e per 1,000 inferences; it rewards size, so higher is "
        "better only between rows of one data set (its rows stand together)",
        True,
        None,
        None,
        "ess_status",
    ),
    TableSpec(
        "throughput",
        Metric.THROUGHPUT,
        "Throughput (inferences per second, minute or hour)",
        False,
        None,
        "",
    ),
)


def spec_of(name: str) -> TableSpec | None:
    """The spec in SPECS that table `name` is built from; None for the others (quality, sources, gains)."""
    return next((spec for spec in SPECS if spec.name == name), None)


SOURCE_TABLE = "energy_source"
GAIN_TABLE = "precision_gain_ess"
SELECTION_TABLE = "selection"
DECODE_TABLE = "energy_decode"
RUNS_SUFFIX, SPREAD_SUFFIX = "_runs", "_spread"  # between-run count and coefficient of variation
LOW_SUFFIX, HIGH_SUFFIX = "_low", "_high"  # a cell's band (report.band_metrics): its ends
FACTORS_TABLE = "impact_factors"
DIFFERENCES_TABLE = "differences"
RATING_TABLE = "rating"
ESS_TABLE = "ess"


def quality_specs(tidy: pd.DataFrame) -> list[TableSpec]:
    """A table per headline quality figure; per-member selection details stay in MLflow."""
    shown = sorted(
        name
        for c in tidy.columns
        if c.startswith(MetricFamily.QUALITY)
        and (name := c.removeprefix(MetricFamily.QUALITY)) in HEADLINE_QUALITY
    )
    return [
        TableSpec(
            f"quality_{re.sub(r'[^A-Za-z0-9_.-]', '_', n)}",
            MetricFamily.QUALITY.of(n),
            f"Quality: {n}",
            False,
        )
        for n in shown
    ]
