"""Comparison tables from the runs frame: a row per config, a column per hardware.

The row key. FINISHED runs share a row (and, on one hardware, a cell) only when their resolved configs
are the same but for the repeat keys (REPEAT_KEYS: seed) and the keys that never change a result
(NOT_A_RESULT_KEYS: tracking, hydra, rerun...), both from ecopipe.tracking, which hashes and names runs
by the same rule. It is derived from the runs, never from a list of the keys that matter: a job logs
its whole config as params (flattened with dots), and load.py reads every key in which the runs differ.
The key's columns are the named dimensions (ROW_DIMS: model and precision always, the others where
they vary), then every config key in which runs that those put in one row differ, headed by its dotted
key (`model.config_overrides.num_hidden_layers`; `(not set)` for a run without it), then `energy`
wherever some run's energy is INCOMPLETE (a device not metered) or a WHOLE GPU's (MIG), so that such
runs have rows of their own. A key that only follows a named dimension (each model's own `model.*`)
adds nothing, nor does a key that makes the hardware column (HARDWARE_KEYS) where it only follows it
(`keyed`).

A cell is one run: when several FINISHED runs share a cell (repeats: seeds, re-runs, resumed sweeps),
the latest started fills it and the others are counted as superseded, their number and spread shown
beside it, never averaged with it. FAILED and KILLED runs never fill a cell; they are listed apart.

Every table has the same rows in the same order, one per row key (the decode and selection tables,
built on other keys, aside). A figure a run lacks is text saying why (NOT_LOGGED, "not defined",
NO_BASELINE), never a missing row; a blank cell is a hardware on which the row has no run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecopipe import names
from ecopipe.config import Precision
from ecopipe.monitor.stats import unresolved
from ecopipe.names import (
    CI95_HIGH,
    CI95_LOW,
    CO2E_PER_1K,
    GROSS,
    HIGH,
    LOW,
    NET,
    SWEEP_KIND,
    WATER_PER_1K,
    WORKLOAD_ENGINE,
    WORKLOAD_PHASE,
    ArmMetric,
    Metric,
    MetricFamily,
    Param,
    Tag,
    TagFamily,
    arm_metric,
)
from ecopipe.report import HEADLINE_QUALITY
from ecopipe.tracking.resume import NOT_A_RESULT_KEYS, REPEAT_KEYS

# Tags read into the tidy frame, by the column name they get there.
_TAG_COLUMNS = {
    "model": Tag.MODEL,
    "dataset": Tag.DATASET,
    "precision": Tag.PRECISION,
    "strategy": Tag.STRATEGY,
    "engine": WORKLOAD_ENGINE,
    "phase": WORKLOAD_PHASE,
    "weights": Tag.WEIGHTS,
    "region": Tag.REGION,
    "attribution": Tag.ATTRIBUTION,
    "hardware": Tag.HARDWARE,
    "hardware_key": Tag.HARDWARE_KEY,
    "config_hash": Tag.CONFIG_HASH,
    "error": Tag.ERROR,
    "reimpact_of": Tag.REIMPACT_OF,
    "ess_status": Tag.ESS_STATUS,
    "figures": Tag.FIGURES,
    "carbon_basis": Tag.CARBON_BASIS,
    "carbon_year": Tag.CARBON_YEAR,
    "water_basis": Tag.WATER_BASIS,
}
_DEFAULTS = {"strategy": "single", "hardware": "unknown"}
COMPONENTS = ("gpu", "cpu", "ram")
BASELINE = Precision.fp32.value
_PRECISION_ORDER = {p.value: i for i, p in enumerate(Precision)}

# Named row dimensions in display order; model and precision always, the others when they vary.
ROW_DIMS = (
    "model",
    "dataset",
    "strategy",
    "phase",
    "engine",
    "weights",
    "precision",
    "batch_size",
    "region",
    "attribution",
)
_ALWAYS = ("model", "precision")
PARAM = "params."  # a config key's column in the tidy frame: the param as the job logged it
# Config keys that make the hardware column: the device and its profile, a simulated GPU's watts.
HARDWARE_KEYS = ("hardware.", "monitor.fake_gpu_watts")
EMPTY_SECTION = "{}"  # how MLflow logs a config section without entries
NOT_SET = "(not set)"  # a row key's config key that the run has no value for (logged before it existed)
NONE = "None"  # how a job logs a key whose value is None: no value, as a run logged before the key existed
ENERGY, COMPLETE = "energy", "complete"  # the dimension that sets runs with incomplete energy apart
NOT_LOGGED = "not logged"  # a FINISHED run without the figure: an older schema, a stage that failed
NOT_DEFINED = "not defined"
NO_BASELINE = f"no {BASELINE} run to compare with"
KEYS = "keys"  # a table's attrs entry: its row key columns; its other columns are hardware


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


def _tag(name: str) -> str:
    """A tag's column in the runs frame."""
    return f"tags.{name}"


_ENERGY_TAGS = tuple(
    _tag(t)
    for t in (
        TagFamily.ENERGY_SOURCE,
        TagFamily.ENERGY_MEASURED,
        TagFamily.ENERGY_UNMETERED,
        TagFamily.ENERGY_WHOLE_GPU,
        Tag.ENERGY_COMPLETE,
    )
)
MIG_SHARE = _tag(Tag.MIG_SHARE)


def unmetered(row: Mapping[str, str]) -> dict[str, str]:
    """Component -> why its energy is missing from an incomplete run's total (`energy_complete=false`:
    a CUDA job whose GPU had no sensor): the `energy_unmetered.*` reasons, else each component without
    a source. Runs logged before the tag existed count as complete."""
    if row.get(_tag(Tag.ENERGY_COMPLETE)) != "false":
        return {}
    reasons = {c: why for c in COMPONENTS if (why := row.get(_tag(TagFamily.ENERGY_UNMETERED.of(c))))}
    sourceless = [c for c in COMPONENTS if row.get(_tag(TagFamily.ENERGY_SOURCE.of(c))) in (None, "", "none")]
    return reasons or dict.fromkeys(sourceless, "no reason recorded")


def _energy_tags_label(tags: pd.DataFrame, one: Callable[[pd.Series], str]) -> pd.Series:
    """`one` of each run's energy tags, computed once per distinct combination: few among thousands."""
    columns = [c for c in tags.columns if c.startswith(_ENERGY_TAGS) or c == MIG_SHARE]
    if not columns:
        return pd.Series(one(pd.Series(dtype="str")), index=tags.index, dtype="str")
    combos = tags[columns].fillna("")
    unique = combos.drop_duplicates()
    labels = pd.Series([one(row) for _, row in unique.iterrows()], index=pd.MultiIndex.from_frame(unique))
    return pd.Series(
        labels.reindex(pd.MultiIndex.from_frame(combos)).to_numpy(), index=tags.index, dtype="str"
    )


def source_label(tags: pd.DataFrame) -> pd.Series:
    """`nvml_counter+rapl`: each component's energy source; an estimate says so, a simulation is `fake`,
    a device an incomplete run could not meter is `gpu NOT METERED`.

    `estimated_*` sources carry the word in their name; any other unmeasured source gets `estimated:`.
    A run without source tags is `source unknown`, never presented as measured.
    """

    def one(row: pd.Series) -> str:
        parts: list[str] = []
        missing = unmetered(row)
        for component in COMPONENTS:
            source = row.get(_tag(TagFamily.ENERGY_SOURCE.of(component)))
            if component in missing:
                source = f"{component} NOT METERED"
            elif not isinstance(source, str) or source in ("", "none"):
                continue
            measured = row.get(_tag(TagFamily.ENERGY_MEASURED.of(component)))
            if measured == "false" and not any(w in source for w in ("estimat", "fake", "NOT METERED")):
                source = f"estimated:{source}"
            if source not in parts:
                parts.append(source)
        return "+".join(parts) or "source unknown"

    return _energy_tags_label(tags, one)


def energy_label(tags: pd.DataFrame) -> pd.Series:
    """The ENERGY dimension's values: COMPLETE; `INCOMPLETE: gpu not metered (why)`; or `WHOLE GPU
    (MIG instance holding 43% of it)`, a counter that covers more than the job's device: neither is
    ever a repeat of a run metered on its own device."""

    def one(row: pd.Series) -> str:
        missing = unmetered(row)
        if missing:
            return "INCOMPLETE: " + ", ".join(f"{c} not metered ({why})" for c, why in missing.items())
        if any(row.get(_tag(TagFamily.ENERGY_WHOLE_GPU.of(c))) for c in COMPONENTS):
            share = row.get(MIG_SHARE)
            holds = f"{float(share):.0%} of it" if share not in (None, "", "unknown") else "an unknown share"
            return f"WHOLE GPU (MIG instance holding {holds})"
        return COMPLETE

    return _energy_tags_label(tags, one)


# Every run's own columns; `user_id` says whose run each cell is (in a shared store, anyone's).
_RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "user_id")


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per job run (sweep parents and runs not logged by an ecopipe job left out), plain names."""
    if runs.empty or _tag(Tag.MODEL) not in runs:
        columns = [*_RUN_COLUMNS, *_TAG_COLUMNS, "source", ENERGY]
        return pd.DataFrame(columns=columns)
    kind = runs.get(_tag(Tag.KIND), pd.Series(np.nan, index=runs.index))
    jobs = runs[(kind != SWEEP_KIND) & runs[_tag(Tag.MODEL)].notna()]
    out = jobs[list(_RUN_COLUMNS)].copy()
    for name, tag in _TAG_COLUMNS.items():
        column = _tag(tag)
        out[name] = jobs[column] if column in jobs else pd.Series(np.nan, index=jobs.index, dtype="str")
        if name in _DEFAULTS:
            out[name] = out[name].fillna(_DEFAULTS[name])
    out["batch_size"] = jobs.get(PARAM + Param.BATCH_SIZE, np.nan)
    out["max_new_tokens"] = pd.to_numeric(jobs.get(PARAM + Param.MAX_NEW_TOKENS, np.nan), errors="coerce")
    out["source"] = source_label(jobs)
    out[ENERGY] = energy_label(jobs)
    params = jobs[[c for c in jobs.columns if c.startswith(PARAM)]]
    metrics = jobs[[c for c in jobs.columns if c.startswith("metrics.")]]
    metrics.columns = [c.removeprefix("metrics.") for c in metrics.columns]
    return pd.concat([out, params, metrics], axis=1).reset_index(drop=True)


def _config_key(column: str, frame: pd.DataFrame) -> bool:
    """A params column that may tell configs apart: not a repeat key, not one that changes no result,
    and not one a named column already reads (batch_size, region, engine)."""
    key = column.removeprefix(PARAM)
    return (
        column.startswith(PARAM)
        and key.split(".")[0] not in (*REPEAT_KEYS, *NOT_A_RESULT_KEYS)
        and key not in frame.columns
    )


def _defines_hardware(key: str) -> bool:
    """A config key that makes the hardware column (the profile, a simulated GPU's watts): it follows the
    column, so it is a key of the row only where it differs within one column."""
    return key.startswith(HARDWARE_KEYS)


def keyed(finished: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The FINISHED runs with their row key's columns as text, and those columns in display order.

    Named dimensions where they vary; then every config key whose values differ among runs that the
    named dimensions put in one row, in key order: a key that only follows a named dimension (each
    model's own `model.*`) is left out, and so is a key that makes the hardware column (`hardware.*`)
    where it only follows the column; a key that differs between two columns is a key of the row, so
    that a row never holds different configs side by side. Then ENERGY where some run's energy is
    incomplete or a whole GPU's. An empty section (`model.config_overrides`, logged as {}) says nothing
    that the entry another run has in it (`model.config_overrides.num_hidden_layers`) does not.
    """
    named = [d for d in ROW_DIMS if d in _ALWAYS or finished[d].fillna("").nunique() > 1]
    energy = [ENERGY] if finished[ENERGY].ne(COMPLETE).any() else []
    keys = {d: finished[d].fillna("").astype("str") for d in [*named, *energy]}
    row = finished.groupby(list(keys.values())).ngroup()
    cell = finished.groupby([*keys.values(), finished["hardware"]]).ngroup()
    params = {}
    for column in (c for c in finished.columns if _config_key(c, finished)):
        values = finished[column].fillna(NOT_SET).astype("str").replace(NONE, NOT_SET)
        key = column.removeprefix(PARAM)
        if values.groupby(cell if _defines_hardware(key) else row).nunique().gt(1).any():
            params[key] = values
    empty = {EMPTY_SECTION, NOT_SET}
    params = {
        key: values
        for key, values in params.items()
        if not (set(values) <= empty and any(other.startswith(f"{key}.") for other in params))
    }
    return finished.assign(**keys, **params), [*named, *sorted(params), *energy]


def latest(finished: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """The cell's run: the latest started FINISHED run per row key and hardware."""
    ordered = finished.sort_values(["start_time", "run_id"], kind="stable")
    return ordered.drop_duplicates([*dims, "hardware"], keep="last")


def _sort_rows(frame: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """Precisions from fp32 down, complete energy first, numbers (a batch size, a config key's values)
    by value, then text."""

    def key(column: pd.Series) -> pd.Series:
        if column.name == "precision":
            return column.map(lambda p: (_PRECISION_ORDER.get(p, len(_PRECISION_ORDER)), p))
        if column.name == ENERGY:
            return column.map(lambda e: (e != COMPLETE, e))
        values = pd.to_numeric(column, errors="coerce")
        return pd.Series(
            [(0, v, "") if pd.notna(v) else (1, 0.0, str(t)) for v, t in zip(values, column, strict=True)],
            index=column.index,
        )

    return frame.sort_values(dims, key=key, kind="stable").reset_index(drop=True)


ESS_TABLE = "ess"


def by_dataset(table: pd.DataFrame) -> pd.DataFrame:
    """ESS compares only within one data set: its rows together, the data set the first key."""
    keys = key_columns(table)
    if "dataset" not in keys:
        return table
    first = ["dataset", *(k for k in keys if k != "dataset")]
    ordered = table.sort_values("dataset", kind="stable")[[*first, *(c for c in table if c not in keys)]]
    ordered = ordered.reset_index(drop=True)
    ordered.attrs[KEYS] = first
    return ordered


def key_columns(table: pd.DataFrame) -> list[str]:
    """A table's row key columns (pivot records them); a table without them (selection) has none."""
    return list(table.attrs.get(KEYS, ()))


def pivot(cells: pd.DataFrame, dims: list[str], value: str, hardware: list[str]) -> pd.DataFrame:
    """Row key columns, then one column per hardware: every row key of `cells`, blank where the row has
    no run on that hardware."""
    wide = cells.pivot(index=dims, columns="hardware", values=value).reindex(columns=hardware)
    wide = wide.reset_index()
    wide.columns.name = None
    wide.attrs[KEYS] = list(dims)
    return _sort_rows(wide, dims)


def figure(cells: pd.DataFrame, metric: str, undefined: str | None = None) -> pd.Series:
    """Each cell's run's `metric`; where the run has none, why: "not defined" where its `undefined` tag
    column says so (ESS over a CO2e <= 0), else NOT_LOGGED."""
    values = cells[metric] if metric in cells else pd.Series(np.nan, index=cells.index)
    if values.notna().all():
        return values
    why = pd.Series(NOT_LOGGED, index=cells.index)
    if undefined is not None:
        why = why.mask(cells[undefined].fillna("").astype("str").str.startswith(NOT_DEFINED), NOT_DEFINED)
    return values.astype("object").where(values.notna(), why)


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


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's cells as floats; text such as "not defined" becomes NaN."""
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64")


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


def failed(jobs: pd.DataFrame) -> pd.DataFrame:
    """FAILED and KILLED job runs; `superseded`: a later FINISHED run of the same config exists."""
    columns = ["run_name", "model", "precision", "dataset", "hardware", "status", "error", "run_id"]
    bad = jobs[jobs["status"].isin(["FAILED", "KILLED"])].sort_values(["start_time", "run_id"], kind="stable")
    done = jobs[jobs["status"] == "FINISHED"].groupby("config_hash")["start_time"].max()
    later = bad["config_hash"].map(done)
    out = bad[columns].copy()
    out["superseded"] = (later.notna() & (later > bad["start_time"])).astype(bool)
    return out.reset_index(drop=True)


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
        return Tables({}, {}, list(_ALWAYS), [], finished, 0)
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

    for spec in (*SPECS, *quality_specs(cells)):
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
    if "ess" in tables and (tables["ess"]["precision"] != BASELINE).any():
        tables[GAIN_TABLE] = precision_gain(tables["ess"], dims, hardware)
        titles[GAIN_TABLE] = f"Precision gain: ESS relative to {BASELINE} on the same hardware [x]"
    return Tables(tables, titles, dims, hardware, cells, len(finished) - len(cells))
