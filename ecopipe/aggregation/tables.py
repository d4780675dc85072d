"""Comparison tables from the runs frame: rows model x precision (x what else varies), a column per hardware.

A cell is one run: when several FINISHED runs share a cell (repeats, resumed or re-run sweeps), the
latest started wins and the others are counted as superseded, never averaged with it. FAILED and
KILLED runs never fill a cell; they are listed apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecopipe.config import Precision
from ecopipe.report import HEADLINE_QUALITY

# Tags read into the tidy frame, by the column name they get there.
_TAG_COLUMNS = {
    "model": "ecopipe.model",
    "dataset": "ecopipe.dataset",
    "precision": "ecopipe.precision",
    "strategy": "ecopipe.strategy",
    "engine": "ecopipe.workload.engine",
    "phase": "ecopipe.workload.phase",
    "weights": "ecopipe.weights",
    "region": "ecopipe.region",
    "attribution": "ecopipe.attribution",
    "hardware": "ecopipe.hardware",
    "hardware_key": "ecopipe.hardware_key",
    "config_hash": "ecopipe.config_hash",
    "error": "ecopipe.error",
    "reimpact_of": "ecopipe.reimpact_of",
    "ess_status": "ecopipe.ess",
    "figures": "ecopipe.figures",
    "carbon_basis": "ecopipe.carbon_basis",
    "carbon_year": "ecopipe.carbon_year",
    "water_basis": "ecopipe.water_basis",
}
_DEFAULTS = {"strategy": "single", "hardware": "unknown"}
COMPONENTS = ("gpu", "cpu", "ram")
BASELINE = Precision.fp32.value
_PRECISION_ORDER = {p.value: i for i, p in enumerate(Precision)}

# Row dimensions in display order; model and precision always, the others when they vary.
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


SPECS = (
    TableSpec(
        "energy_gross",
        "energy_per_1k_gross_j",
        "Energy per 1,000 inferences, gross [J]",
        True,
        "energy_per_1k_gross_ci95_j",
        "J",
    ),
    TableSpec(
        "energy_net",
        "energy_per_1k_net_j",
        "Energy per 1,000 inferences, net of idle [J]",
        True,
        "energy_per_1k_net_ci95_j",
        "J",
    ),
    TableSpec(
        "energy_tokens", "energy_per_1k_tokens_gross_j", "Energy per 1,000 tokens, gross [J]", True, None, "J"
    ),
    TableSpec("co2e", "co2e_g_per_1k", "CO2e per 1,000 inferences [g]", True, "co2e_ci95_g_per_1k", "g"),
    TableSpec(
        "water", "water_l_per_1k", "Water per 1,000 inferences, on-site + off-site [L]", True, None, "L"
    ),
    TableSpec(
        "ess",
        "ess",
        "ESS: effective parameters (M) per g CO2e per 1,000 inferences (higher is better)",
        True,
        None,
        None,
        "ess_status",
    ),
    TableSpec("throughput", "throughput_per_s", "Throughput [inferences/s]", False, None, ""),
)
UNITS = {spec.name: spec.unit for spec in SPECS}
SOURCE_TABLE = "energy_source"
GAIN_TABLE = "precision_gain_ess"
SELECTION_TABLE = "selection"
DECODE_TABLE = "energy_decode"
RUNS_SUFFIX, SPREAD_SUFFIX = "_runs", "_spread"  # between-run count and coefficient of variation
LOW_SUFFIX, HIGH_SUFFIX = "_low", "_high"  # a cell's band (report.band_metrics): its ends
FACTORS_TABLE = "impact_factors"


def quality_specs(tidy: pd.DataFrame) -> list[TableSpec]:
    """A table per headline quality figure; per-member selection details stay in MLflow."""
    names = sorted(
        name
        for c in tidy.columns
        if c.startswith("quality.") and (name := c.removeprefix("quality.")) in HEADLINE_QUALITY
    )
    return [
        TableSpec(f"quality_{re.sub(r'[^A-Za-z0-9_.-]', '_', n)}", f"quality.{n}", f"Quality: {n}", False)
        for n in names
    ]


def source_label(tags: pd.DataFrame) -> pd.Series:
    """`nvml_counter+rapl`: each component's energy source; an estimate says so, a simulation is `fake`.

    `estimated_*` sources carry the word in their name; any other unmeasured source gets `estimated:`.
    A run without source tags is `source unknown`, never presented as measured.
    """

    def one(row: pd.Series) -> str:
        parts: list[str] = []
        for component in COMPONENTS:
            source = row.get(f"tags.energy_source.{component}")
            if not isinstance(source, str) or source in ("", "none"):
                continue
            measured = row.get(f"tags.energy_measured.{component}")
            if measured == "false" and "estimat" not in source and "fake" not in source:
                source = f"estimated:{source}"
            if source not in parts:
                parts.append(source)
        return "+".join(parts) or "source unknown"

    columns = [c for c in tags.columns if c.startswith(("tags.energy_source.", "tags.energy_measured."))]
    if not columns:
        return pd.Series("source unknown", index=tags.index, dtype="str")
    # Few distinct combinations among thousands of runs: label each once.
    combos = tags[columns].fillna("")
    unique = combos.drop_duplicates()
    labels = pd.Series([one(row) for _, row in unique.iterrows()], index=pd.MultiIndex.from_frame(unique))
    return pd.Series(
        labels.reindex(pd.MultiIndex.from_frame(combos)).to_numpy(), index=tags.index, dtype="str"
    )


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per job run (sweep parents and runs not logged by an ecopipe job left out), plain names."""
    if runs.empty or "tags.ecopipe.model" not in runs:
        return pd.DataFrame(columns=["run_id", "run_name", "status", "start_time", *_TAG_COLUMNS, "source"])
    kind = runs.get("tags.ecopipe.kind", pd.Series(np.nan, index=runs.index))
    jobs = runs[(kind != "sweep") & runs["tags.ecopipe.model"].notna()]
    out = jobs[["run_id", "run_name", "status", "start_time"]].copy()
    for name, tag in _TAG_COLUMNS.items():
        column = f"tags.{tag}"
        out[name] = jobs[column] if column in jobs else pd.Series(np.nan, index=jobs.index, dtype="str")
        if name in _DEFAULTS:
            out[name] = out[name].fillna(_DEFAULTS[name])
    out["batch_size"] = jobs.get("params.batch_size", np.nan)
    out["max_new_tokens"] = pd.to_numeric(jobs.get("params.model.max_new_tokens", np.nan), errors="coerce")
    out["source"] = source_label(jobs)
    metrics = jobs[[c for c in jobs.columns if c.startswith("metrics.")]]
    metrics.columns = [c.removeprefix("metrics.") for c in metrics.columns]
    return pd.concat([out, metrics], axis=1).reset_index(drop=True)


def row_dims(finished: pd.DataFrame) -> list[str]:
    """model and precision, plus every other dimension with more than one value among the runs."""
    return [d for d in ROW_DIMS if d in _ALWAYS or finished[d].fillna("").nunique() > 1]


def latest(finished: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """The cell's run: the latest started FINISHED run per row key and hardware."""
    keyed = finished.copy()
    keyed[dims] = keyed[dims].fillna("").astype("str")
    keyed = keyed.sort_values(["start_time", "run_id"], kind="stable")
    return keyed.drop_duplicates([*dims, "hardware"], keep="last")


def _sort_rows(frame: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    def key(column: pd.Series) -> pd.Series:
        if column.name == "precision":
            return column.map(lambda p: (_PRECISION_ORDER.get(p, len(_PRECISION_ORDER)), p))
        return column

    return frame.sort_values(dims, key=key, kind="stable").reset_index(drop=True)


def pivot(cells: pd.DataFrame, dims: list[str], value: str, hardware: list[str]) -> pd.DataFrame:
    """Row key columns, then one column per hardware; rows without any value dropped."""
    wide = cells.pivot(index=dims, columns="hardware", values=value).reindex(columns=hardware)
    wide = wide.dropna(how="all").reset_index()
    wide.columns.name = None
    return _sort_rows(wide, dims)


NOT_DEFINED = "not defined"


def with_undefined(cells: pd.DataFrame, spec: TableSpec) -> pd.Series:
    """The spec's metric, with "not defined" where the run has no value and its tag says why."""
    values = cells[spec.metric] if spec.metric in cells else pd.Series(np.nan, index=cells.index)
    if spec.undefined is None:
        return values
    undefined = cells[spec.undefined].fillna("").astype("str").str.startswith(NOT_DEFINED) & values.isna()
    if not undefined.any():
        return values
    return values.astype("object").where(~undefined, NOT_DEFINED)


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's cells as floats; text such as "not defined" becomes NaN."""
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64")


def precision_gain(ess: pd.DataFrame, dims: list[str], hardware: list[str]) -> pd.DataFrame:
    """ESS of each non-fp32 precision over fp32's for the same row key and hardware; no fp32: blank."""
    others = [d for d in dims if d != "precision"]
    base = ess[ess["precision"] == BASELINE].set_index(others)[hardware]
    rest = ess[ess["precision"] != BASELINE]
    if rest.empty:
        return pd.DataFrame(columns=[*dims, *hardware])
    reference = base.reindex(pd.MultiIndex.from_frame(rest[others]) if len(others) > 1 else rest[others[0]])
    # An ESS that is not defined has no gain: its cell stays blank.
    ratio = numbers(rest[hardware]).to_numpy() / numbers(reference).to_numpy()
    gain = rest[dims].reset_index(drop=True)
    gain[hardware] = ratio
    return _sort_rows(gain, dims)


def selection_study(cells: pd.DataFrame) -> pd.DataFrame:
    """The latest selection job of each pool and hardware: every arm it measured in the same protocol
    (each member alone, each strategy; `selection.<arm>.*`), with savings measured against the
    reference (the most accurate member on validation B) and the costliest member, 95% intervals."""
    chosen = cells[cells["strategy"] != "single"]
    rows = []
    for (pool, hardware), group in chosen.groupby(["model", "hardware"], sort=True):
        run = group.sort_values("start_time").iloc[-1]
        arms = [
            c.removeprefix("selection.").removesuffix(".energy_per_1k_j")
            for c in group.columns
            if c.startswith("selection.") and c.count(".") == 2 and c.endswith(".energy_per_1k_j")
        ]
        for arm in sorted(a for a in arms if pd.notna(run[f"selection.{a}.energy_per_1k_j"])):
            metric = f"selection.{arm}."
            rows.append(
                {
                    "pool": pool,
                    "hardware": hardware,
                    "arm": arm,
                    "accuracy": run[metric + "accuracy"],
                    "accuracy vs reference": run[metric + "accuracy_delta_vs_reference"],
                    "energy per 1,000 (J)": run[metric + "energy_per_1k_j"],
                    "energy 95% CI (J)": run[metric + "energy_per_1k_ci95_j"],
                    # the band (an estimate's coefficient range and the CI); runs logged before it: none
                    "energy low (J)": run.get(metric + "energy_per_1k_j_low"),
                    "energy high (J)": run.get(metric + "energy_per_1k_j_high"),
                    "source": run["source"],
                    "savings vs reference": run[metric + "savings_measured_vs_reference"],
                    "savings vs reference, 95% low": run[metric + "savings_measured_vs_reference_ci95_low"],
                    "savings vs reference, 95% high": run[metric + "savings_measured_vs_reference_ci95_high"],
                    "savings vs costliest": run[metric + "savings_measured_vs_costliest"],
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
    per_prompt = cells.assign(j_per_prompt=cells["energy_per_1k_gross_j"] / 1000)
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

    A cell's runs (the same row key and hardware: repeats of one config hash, or seeds and re-runs
    that differ in no row dimension) measure the same thing; their spread shows what a single run's
    95% CI (over its trials only) cannot: drift between runs on a shared or throttling machine.
    """
    keyed = finished[finished[metric].notna()].copy()
    keyed[dims] = keyed[dims].fillna("").astype("str")
    stats = keyed.groupby([*dims, "hardware"])[metric].agg(["count", "mean", "std"]).reset_index()
    if stats.empty or stats["count"].max() < 2:
        return None
    stats["cv"] = stats["std"] / stats["mean"].abs()
    return pivot(stats, dims, "count", hardware), pivot(stats, dims, "cv", hardware)


def impact_factors(cells: pd.DataFrame) -> pd.Series:
    """Per run, the factors its CO2e and water rest on, in words: `473 g/kWh lifecycle 2024; PUE 1.56
    (1.55-1.63); water consumption`. Runs logged before these tags existed read what they have."""

    def one(row: pd.Series) -> float | str:
        intensity = row.get("carbon_intensity_g_per_kwh")
        if intensity is None or pd.isna(intensity):
            return np.nan
        year = row.get("carbon_year")
        carbon = f"{intensity:.4g} g/kWh {row.get('carbon_basis') or 'basis not recorded'}"
        carbon += f" {year}" if isinstance(year, str) and year else ", year not recorded"
        pue = f"PUE {row['pue']:.3g}" if pd.notna(row.get("pue")) else "PUE not recorded"
        low, high = row.get("pue_low"), row.get("pue_high")
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
    dims = row_dims(finished)
    cells = latest(finished, dims)
    hardware = sorted(cells["hardware"].unique())
    tables: dict[str, pd.DataFrame] = {}
    titles: dict[str, str] = {}
    for spec in (*SPECS, *quality_specs(cells)):
        values = with_undefined(cells, spec)
        if values.isna().all():
            continue
        tables[spec.name] = pivot(cells.assign(**{spec.metric: values}), dims, spec.metric, hardware)
        titles[spec.name] = spec.title
        if spec.ci95 and spec.ci95 in cells and cells[spec.ci95].notna().any():
            # Named <table>_ci95: render puts each half-width beside its value.
            tables[f"{spec.name}_ci95"] = pivot(cells, dims, spec.ci95, hardware)
            titles[f"{spec.name}_ci95"] = f"{spec.title}: 95% CI half-width"
            spread = run_spread(finished, dims, spec.metric, hardware)
            if spread is not None:  # named <table>_runs and <table>_spread: render writes them beside it
                tables[spec.name + RUNS_SUFFIX], tables[spec.name + SPREAD_SUFFIX] = spread
                titles[spec.name + RUNS_SUFFIX] = f"{spec.title}: FINISHED runs per cell"
                titles[spec.name + SPREAD_SUFFIX] = f"{spec.title}: between-run coefficient of variation"
        for suffix in (LOW_SUFFIX, HIGH_SUFFIX):  # named <table>_low / _high: render writes the band
            if (
                spec.energy
                and f"{spec.metric}{suffix}" in cells
                and cells[f"{spec.metric}{suffix}"].notna().any()
            ):
                tables[spec.name + suffix] = pivot(cells, dims, f"{spec.metric}{suffix}", hardware)
                titles[spec.name + suffix] = f"{spec.title}: band, {suffix.strip('_')} end"
    tables[SOURCE_TABLE] = pivot(cells, dims, "source", hardware)
    titles[SOURCE_TABLE] = "Energy source of each cell (estimated_* = estimate, fake = simulated)"
    factors = impact_factors(cells)
    if factors.notna().any():
        tables[FACTORS_TABLE] = pivot(cells.assign(factors=factors), dims, "factors", hardware)
        titles[FACTORS_TABLE] = (
            "Factors behind each cell's CO2e and water: carbon intensity (basis, year), PUE (range), "
            "water basis"
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
    if "ess" in tables:
        gain = precision_gain(tables["ess"], dims, hardware)
        if not gain.empty:
            tables[GAIN_TABLE] = gain
            titles[GAIN_TABLE] = f"Precision gain: ESS relative to {BASELINE} on the same hardware [x]"
    return Tables(tables, titles, dims, hardware, cells, len(finished) - len(cells))
