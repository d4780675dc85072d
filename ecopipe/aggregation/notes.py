"""The notes above an aggregation's tables: what was read, how each cell was chosen, and what is missing.

The summary, the parent run's description and the command line show them: the job runs by status, the
rows and columns, where each cell's run and energy come from, and which runs were reused, copied,
incomplete or unresolved.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ecopipe.aggregation import render
from ecopipe.aggregation.pivot import NOT_LOGGED, key_columns
from ecopipe.aggregation.rows import COMPLETE, ENERGY
from ecopipe.aggregation.stores import store_labels
from ecopipe.aggregation.tables import Tables, unresolved_cells
from ecopipe.monitor.stats import UNRESOLVED_ADVICE
from ecopipe.tracking.resume import REPEAT_KEYS

__all__ = ["copied_note", "reused_note", "summary_notes"]

_LISTED = 20  # reused runs named in the notes; all of them are in runs.csv


def _stores_note(jobs: pd.DataFrame, uris: Sequence[str]) -> str:
    labels = store_labels(uris)
    if len(uris) == 1:
        return f"tracking store: {labels[uris[0]]}"
    counts = jobs["store"].value_counts()
    listed = [f"{labels[uri]} (job runs: {int(counts.get(labels[uri], 0))})" for uri in uris]
    return f"tracking stores ({len(uris)}, column store in runs.csv): {'; '.join(listed)}"


def summary_notes(
    jobs: pd.DataFrame, built: Tables, uris: Sequence[str], filter_string: str | None
) -> list[str]:
    """The notes every aggregation shows: job runs by status, rows and columns, cells, energy sources,
    bands, stores, and what is incomplete, not logged, missing or unresolved."""
    status = jobs["status"].value_counts()
    failed = int(status.get("FAILED", 0) + status.get("KILLED", 0))
    other = len(jobs) - int(status.get("FINISHED", 0)) - failed
    repeats = " and ".join(REPEAT_KEYS)
    notes = [
        f"{len(jobs)} job runs: {int(status.get('FINISHED', 0))} FINISHED, {failed} FAILED or KILLED"
        + (f", {other} still running or scheduled (left out)" if other else ""),
        f"rows: one per config, {' x '.join(built.dims)} (a dotted name is a config key in which the runs "
        f"differ; runs whose configs differ in {repeats} only, or re-runs, are repeats, in one cell); "
        "columns: hardware "
        f"({', '.join(built.hardware) or 'none'})",
        "each cell is the latest started FINISHED run for its row and hardware"
        + (f"; {built.superseded} earlier runs superseded" if built.superseded else ""),
        "energy source: the last row of each energy table names each column's, and a cell whose source "
        "differs names its own; nvml_counter, nvml_power_polling, nvml_avg_power_polling, rapl and "
        "rapl_job_share are measured (nvml_counter_whole_gpu: a MIG instance's whole GPU), estimated_* "
        "are estimates (their energy follows the job's CPU time and memory, not what the hardware drew), "
        "fake is simulated, NOT METERED is a device left out of the total; CO2e, water and ESS inherit "
        "their energy's source",
        "(low–high) after a value is its band: for an estimate, the coefficients' range and the 95% CI over "
        "the run's trials; for a measurement, that CI; CO2e and water add the PUE's range. ± is a 95% CI "
        "where no band was logged. Where a cell has several runs, CV is the spread between them (run to "
        "run), which the within-run CI does not cover",
        _stores_note(jobs, uris),
    ]
    finished = jobs[jobs["status"] == "FINISHED"]
    incomplete = int((finished[ENERGY] != COMPLETE).sum())
    if incomplete:
        notes.append(
            f"{incomplete} FINISHED runs have INCOMPLETE energy (column energy: a device not metered, its "
            "energy missing from all their figures): rows of their own, never counted with complete runs, "
            "and left out of the plots"
        )
    if any(table.isin([NOT_LOGGED]).any().any() for table in built.tables.values()):
        notes.append(
            f"{NOT_LOGGED}: the run has no such figure (logged before it existed, or a stage that failed)"
        )
    shown = [built.tables[name] for name in render.shown_names(built.tables)]
    if any(table.drop(columns=key_columns(table)).isna().any().any() for table in shown):
        notes.append(
            f"{render.NO_FINISHED_RUN}: no FINISHED run of that row on that hardware (one that failed is in "
            "the failed jobs' table)"
        )
    if count := unresolved_cells(built.tables):
        notes.append(
            f"{count} cells are UNRESOLVED (their 95% CI is over half the figure): {UNRESOLVED_ADVICE}"
        )
    if filter_string:
        notes.append(f"filter: {filter_string}")
    return notes


def copied_note(copied: list[str]) -> str:
    """The run ids found in more than one store, each counted once."""
    more = f" and {len(copied) - _LISTED} more" if len(copied) > _LISTED else ""
    return (
        f"{len(copied)} runs found in more than one store (a copied database file?), each counted once, "
        f"from the first store given that holds it: {', '.join(copied[:_LISTED])}{more}"
    )


def reused_note(reused: dict[str, str], other_code: dict[str, str], users: dict[str, str]) -> str:
    """A resumed sweep's runs measured before it (and which of them another code version measured)."""
    by = sorted(reused.items(), key=lambda item: item[1])
    listed = [f"{name} ({run_id}, by {users.get(run_id, 'unknown')})" for run_id, name in by]
    more = f"; {len(listed) - _LISTED} more in runs.csv (column reused)" if len(listed) > _LISTED else ""
    note = f"{len(reused)} reused, measured before this sweep: {', '.join(listed[:_LISTED])}{more}"
    if other_code:
        versions = ", ".join(sorted(set(other_code.values())))
        note += (
            f". {len(other_code)} of them were measured by another code version ({versions}) than this "
            f"sweep's: {', '.join(reused[run_id] for run_id in sorted(other_code)[:_LISTED])}; "
            "rerun_other_version=true measures them again"
        )
    return note
