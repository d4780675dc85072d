"""Job runs as a tidy frame (with each run's energy source and completeness), the row key that says
which of them are one config, the run that fills each cell, and the runs that failed.

The row key. FINISHED runs share a row (and, on one hardware, a cell) only when their resolved configs
are the same but for the repeat keys (REPEAT_KEYS: seed) and the keys that never change a result
(NOT_A_RESULT_KEYS: tracking, hydra, rerun...), both from ecopipe.tracking.resume, which hashes and names runs
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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from ecopipe.names import SWEEP_KIND, WORKLOAD_ENGINE, WORKLOAD_PHASE, Param, Tag, TagFamily
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
ALWAYS = ("model", "precision")
PARAM = "params."  # a config key's column in the tidy frame: the param as the job logged it
# Config keys that make the hardware column: the device and its profile, a simulated GPU's watts.
HARDWARE_KEYS = ("hardware.", "monitor.fake_gpu_watts")
EMPTY_SECTION = "{}"  # how MLflow logs a config section without entries
NOT_SET = "(not set)"  # a row key's config key that the run has no value for (logged before it existed)
NONE = "None"  # how a job logs a key whose value is None: no value, as a run logged before the key existed
ENERGY, COMPLETE = "energy", "complete"  # the dimension that sets runs with incomplete energy apart


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
    named = [d for d in ROW_DIMS if d in ALWAYS or finished[d].fillna("").nunique() > 1]
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


def failed(jobs: pd.DataFrame) -> pd.DataFrame:
    """FAILED and KILLED job runs; `superseded`: a later FINISHED run of the same config exists."""
    columns = ["run_name", "model", "precision", "dataset", "hardware", "status", "error", "run_id"]
    bad = jobs[jobs["status"].isin(["FAILED", "KILLED"])].sort_values(["start_time", "run_id"], kind="stable")
    done = jobs[jobs["status"] == "FINISHED"].groupby("config_hash")["start_time"].max()
    later = bad["config_hash"].map(done)
    out = bad[columns].copy()
    out["superseded"] = (later.notna() & (later > bad["start_time"])).astype(bool)
    return out.reset_index(drop=True)
