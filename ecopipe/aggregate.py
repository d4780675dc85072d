"""`python -m ecopipe.aggregate`: comparison tables, precision gains and plots over any set of runs.

Runs from any number of machines and sweeps sharing one tracking store are read, one row per job run;
tables have a row per config (model x precision, x every other dimension or config key in which the
runs differ, x `energy` where some run's energy is incomplete; see ecopipe.aggregation.rows) and one
column per hardware. Where several FINISHED runs share a cell (repeats of one config: seeds, re-runs,
resumed sweeps), the latest started one fills it. Every table has the same rows; a figure a run lacks
reads why ("not logged"). Written as CSV, Markdown, HTML and PNG, and logged to a sweep's parent run by
the Hydra callback at the end of every multirun.

    python -m ecopipe.aggregate                      # the latest sweep in the store, named
    python -m ecopipe.aggregate --experiment ecopipe  # every run of an experiment
    python -m ecopipe.aggregate --sweep PARENT_RUN_ID --log
    python -m ecopipe.aggregate --experiment ecopipe --filter "tags.ecopipe.region = 'FRA'" --out tables/
    python -m ecopipe.aggregate --experiment gpu-check-sweep --tracking-uri sqlite:///gpu/mlflow.db \
        --tracking-uri sqlite:///cpu/mlflow.db   # two machines' stores, one table
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ecopipe.aggregation import label, render, rows
from ecopipe.aggregation.notes import copied_note, reused_note, summary_notes
from ecopipe.aggregation.rating import REFERENCE_COLUMNS, rate, read_reference
from ecopipe.aggregation.specs import RATING_TABLE
from ecopipe.aggregation.stores import (
    AggregationError,
    check_stores,
    combine_stores,
    missing_store,
    read_store,
    store_labels,
)
from ecopipe.aggregation.tables import build
from ecopipe.config import ConfigError, TrackingConfig
from ecopipe.credentials import redact
from ecopipe.names import SWEEP_KIND, Tag
from ecopipe.tracking.experiment import SEARCH_PAGE
from ecopipe.tracking.liveness import FUTURE_SKEW_S, current_user, vouched
from ecopipe.tracking.store import check_tracking_uri, check_writable_folder, resolve_uri, store_writable

__all__ = ["Aggregate", "AggregationError", "aggregate", "log_to_run", "main"]

log = logging.getLogger(__name__)
NOTE_LIMIT = 8000
ARTIFACT_DIR = render.TABLES  # the parent run's folder of log_table JSON tables (and their CSV)
STORE_URI_ENV = "ECOPIPE_STORE_URI"


@dataclass
class Aggregate:
    runs: pd.DataFrame  # every run read, flat: run columns, tags.*, params.*, metrics.*
    tables: dict[str, pd.DataFrame]  # name -> row key columns, then one numeric column per hardware
    failed: pd.DataFrame  # FAILED and KILLED job runs
    files: list[Path] = field(default_factory=list)  # written when out_dir was given
    jobs: pd.DataFrame = field(default_factory=pd.DataFrame)  # one tidy row per job run
    titles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    heading: str = "ecopipe aggregate"

    def write(self, out_dir: Path) -> list[Path]:
        return render.write_all(
            out_dir, self.heading, self.notes, self.tables, self.titles, self.failed, self.jobs
        )


def aggregate(
    tracking_uri: str | Sequence[str],
    experiment: str,
    sweep_id: str | None = None,
    filter_string: str | None = None,
    out_dir: Path | None = None,
    reader: str = "auto",
    store_uri: str | None = None,
    reap_after_h: float | None = None,
    rating: bool = False,
    rating_reference: pd.DataFrame | None = None,
) -> Aggregate:
    """Tables over the experiment's runs (one sweep's when `sweep_id` is given); files when `out_dir` is.

    `tracking_uri`: one store, or several (each holding `experiment`; a column per hardware across
    all of them, e.g. a GPU machine's store and a CPU machine's). `reader`: "auto" reads a SQLite or
    PostgreSQL store's tables directly, anything else via search_runs (see ecopipe.aggregation.load);
    "sql" and "search" force one. `store_uri` (default $ECOPIPE_STORE_URI, one store only) is the
    database behind a tracking server, read directly in its place. `rating`: a table of each run's
    stars by the AI Energy Score's rule (aggregation.rating), within the store's range, or within the
    published ranges of `rating_reference` (rating.read_reference) where given.
    """
    uris = [tracking_uri] if isinstance(tracking_uri, str) else list(tracking_uri)
    check_stores(uris, sweep_id, store_uri)
    if len(uris) == 1:  # with several stores, which one the environment's database backs is unknown
        store_uri = store_uri or os.environ.get(STORE_URI_ENV)
    labels = store_labels(uris)
    reads = [
        read_store(uri, experiment, sweep_id, filter_string, reader, store_uri, reap_after_h, labels[uri])
        for uri in uris
    ]
    runs, copied = combine_stores(reads)
    # A start in the future would make a run every cell's "latest": a clock far ahead, or a planted run.
    future = runs["start_time"].astype("float64") > (time.time() + FUTURE_SKEW_S) * 1000
    runs = runs[~future].reset_index(drop=True)
    reused = {run_id: name for read in reads for run_id, name in read.reused.items()}
    other_code = {run_id: version for read in reads for run_id, version in read.other_code.items()}
    jobs = rows.tidy(runs)
    jobs["reused"] = jobs["run_id"].isin(reused)  # measured before this sweep, not re-run by it
    jobs["store"] = jobs["run_id"].map(runs.set_index("run_id")["store"])
    built = build(jobs)
    if rating or rating_reference is not None:
        built.tables[RATING_TABLE] = rate(jobs, rating_reference)
        built.titles[RATING_TABLE] = (
            "Rating by the AI Energy Score's rule: GPU energy per 1,000 queries (Wh, gross), five bins of "
            "equal width over the range (5 stars: the lowest), within a task and text generation's size class"
        )
    heading = f"ecopipe aggregate: experiment {experiment}" + (f", sweep {sweep_id}" if sweep_id else "")
    notes = summary_notes(jobs, built, uris, filter_string)
    if reused:
        notes.insert(1, reused_note(reused, other_code, runs.set_index("run_id")["user_id"].to_dict()))
    if future.any():
        notes.append(
            f"{int(future.sum())} runs start more than {FUTURE_SKEW_S / 60:g} min in the future (a clock far "
            "ahead, or a run someone planted): left out of every table"
        )
    if copied:
        notes.insert(1, copied_note(copied))
    for read in reads:
        if read.read_only:
            notes.append(
                f"{redact(read.uri)} is read-only, so nothing was written to it: a run that a killed job "
                "left RUNNING stays RUNNING here (aggregating a writable copy marks it FAILED)"
            )
    result = Aggregate(
        runs=runs,
        tables=built.tables,
        failed=rows.failed(jobs),
        jobs=jobs,
        titles=built.titles,
        notes=notes,
        heading=heading,
    )
    if out_dir is not None:
        result.files = result.write(Path(out_dir))
        _log_labels(result, {label: uri for uri, label in labels.items()})
    return result


def _log_labels(result: Aggregate, uris: Mapping[str, str]) -> None:
    """Each rated run's label, as an artifact of the run (`label/`), where its store may be written."""
    stores = result.jobs.set_index("run_id")["store"]
    for path in (f for f in result.files if f.parent.name == render.LABELS):
        run_id = label.run_id_of(path)
        uri = uris[stores[run_id]]
        if store_writable(uri):
            MlflowClient(tracking_uri=uri).log_artifact(run_id, str(path), "label")


def _log_table(
    client: MlflowClient, run_id: str, frame: pd.DataFrame, artifact: str, existing: set[str]
) -> None:
    if artifact not in existing:
        client.log_table(run_id, data=frame, artifact_file=artifact)
        return
    # log_table appends to a table already there (a re-aggregated sweep): replace it, same format.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        frame.to_json(path, orient="split", index=False, date_format="iso")
        client.log_artifact(run_id, str(path), str(Path(artifact).parent))


def _note(summary_md: str, jobs: int) -> str:
    """summary.md as the parent run's description, after a plain first line (what the run list's
    Description column shows); images stay in plots/, and a note too long for a tag (MLflow keeps
    8,000 characters) ends by pointing at the file."""
    lines = [line for line in summary_md.splitlines() if not line.startswith("![")]
    first = f"sweep of {jobs} jobs: tables in its artifacts"
    text = "\n".join([first, "", *("##" + line if line.startswith("#") else line for line in lines)])
    if len(text) <= NOTE_LIMIT:
        return text
    cut = text[: NOTE_LIMIT - 200].rsplit("\n", 1)[0]
    return cut + "\n\n... (cut here: every table is in this run's summary.md and tables/)"


def log_to_run(client: MlflowClient, run_id: str, result: Aggregate) -> None:
    """Every file (written to a temporary folder if `result` has none) in its folder (summary.md and
    summary.html at the top, then tables/, plots/, data/), and each table as the summary shows it (its
    bands, CIs and energy-source row in words), the failed jobs included, with log_table under
    tables/ so the MLflow UI shows them; the numbers stay in tables/*.csv."""
    existing = {a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)}
    with tempfile.TemporaryDirectory() as tmp:
        files = result.files or result.write(Path(tmp))
        root = next(p.parent for p in files if p.name == "summary.md")
        for path in files:
            folder = path.parent.relative_to(root).as_posix()
            client.log_artifact(run_id, str(path), None if folder == "." else folder)
        summary = next(p for p in files if p.name == "summary.md").read_text()
    client.set_tag(run_id, Tag.NOTE, _note(summary, len(result.jobs)))
    tables = dict(render.shown(result.tables))
    if not result.failed.empty:
        tables["failed"] = result.failed
    for name, frame in tables.items():
        _log_table(client, run_id, frame, f"{ARTIFACT_DIR}/{name}.json", existing)


def _hours(text: str) -> float:
    hours = float(text)
    if not 0 < hours < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of hours")
    return hours


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ecopipe.aggregate",
        description="Comparison tables (CSV, Markdown, HTML) and plots over an MLflow experiment's runs.",
    )
    parser.add_argument(
        "--experiment", help="every run of this experiment (default: the latest sweep, in its experiment)"
    )
    parser.add_argument("--sweep", metavar="PARENT_RUN_ID", help="only the jobs of this sweep")
    parser.add_argument(
        "--filter", metavar="FILTER", help="an MLflow search filter, e.g. \"tags.ecopipe.region = 'FRA'\""
    )
    parser.add_argument(
        "--tracking-uri",
        action="append",
        help="a store to read; repeat it to put several stores' runs in one table (a GPU machine's and "
        "a CPU machine's: a column each), which needs --experiment; default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in this directory",
    )
    parser.add_argument(
        "--store-uri",
        help="the database behind a tracking server, read directly: postgresql://USER@HOST:PORT/DB "
        "(password from PGPASSWORD or ~/.pgpass); default: $ECOPIPE_STORE_URI",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: aggregate/<experiment>[-<sweep>])")
    parser.add_argument("--log", action="store_true", help="also log the results to the sweep's parent run")
    parser.add_argument(
        "--rating",
        action="store_true",
        help="rate each run 1-5 stars by the AI Energy Score's rule (GPU Wh per 1,000 queries), relative to "
        "the runs in the store",
    )
    parser.add_argument(
        "--rating-reference",
        type=Path,
        metavar="CSV",
        help="rate within published ranges instead: a CSV with the columns " + ", ".join(REFERENCE_COLUMNS),
    )
    parser.add_argument(
        "--reap-after-h",
        type=_hours,
        metavar="HOURS",
        help="mark FAILED a RUNNING run this machine cannot see (another host's) once it started this many "
        "hours ago; default: never (a run of this machine is marked once its process is gone)",
    )
    return parser


def latest_sweep(client: MlflowClient) -> Run | None:
    """The most recently started sweep of this user that has ended, in any experiment of the store (a
    shared store's latest sweep may be anyone's, or planted)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    newest_first, token = ["attributes.start_time DESC"], None
    while True:  # page by page: runs planted by the thousand must not push this user's sweeps out
        page = client.search_runs(experiments, f"tags.`{Tag.KIND}` = '{SWEEP_KIND}'", order_by=newest_first,
                                  max_results=SEARCH_PAGE, page_token=token)  # fmt: skip
        found = next((run for run in page if vouched(run) and run.info.status != "RUNNING"), None)
        if found is not None or not page.token:
            return found
        token = page.token


def _scope(client: MlflowClient, experiment: str | None, sweep: str | None) -> tuple[str, str | None, str]:
    """Experiment name and sweep id to aggregate, and a sentence saying which and how to pick another."""
    if experiment is not None:
        return experiment, sweep, f"experiment {experiment}" + (f", sweep {sweep}" if sweep else "")
    run = client.get_run(sweep) if sweep else latest_sweep(client)
    if run is None:
        name = TrackingConfig.experiment
        why = f"no ended sweep of {current_user()} in the store; --experiment NAME picks another"
        return name, None, f"experiment {name} ({why})"
    name = client.get_experiment(run.info.experiment_id).name
    started = datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
    which = "sweep" if sweep else "the latest sweep"
    return (
        name,
        run.info.run_id,
        (
            f"{which} {run.info.run_id} ({run.info.run_name}, experiment {name}, started {started}); "
            "--sweep PARENT_RUN_ID picks another, --experiment NAME takes a whole experiment"
        ),
    )


def _folder_name(name: str) -> str:
    """A name as one folder inside ./aggregate: every character but letters, digits and - _ . becomes _."""
    return re.sub(r"[^\w.-]", "_", name, flags=re.ASCII).lstrip(".") or "experiment"


def _options_error(args: argparse.Namespace, uris: Sequence[str]) -> str | None:
    """Why these options and stores cannot be read together, in one paragraph; None when they can."""
    try:
        check_stores(uris, args.sweep, args.store_uri)
    except AggregationError as error:
        return str(error)
    if args.log and len(uris) > 1:
        return (
            f"--log works with one --tracking-uri only (it logs to a sweep's parent run, in one store); "
            f"with {len(uris)} stores, the tables are written to --out"
        )
    if len(uris) > 1 and args.experiment is None:
        return (
            f"--tracking-uri is given {len(uris)} times: several stores need --experiment NAME (the same "
            "experiment name in each store, e.g. --experiment gpu-check-sweep); without it the latest "
            "sweep is taken, and a sweep lives in one store"
        )
    for uri in uris:
        try:
            check_tracking_uri(uri, read_only=True)  # an archived, read-only store can be aggregated
        except ConfigError as error:
            return str(error)
        if missing := missing_store(uri):
            return missing
    if args.log and not store_writable(uris[0]):
        return f"--log writes to the sweep's parent run, but {redact(uris[0])} is read-only; leave --log out"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    uris = args.tracking_uri or [resolve_uri(TrackingConfig())]
    refused = _options_error(args, uris)
    try:
        reference = read_reference(args.rating_reference) if args.rating_reference else None
    except ConfigError as error:
        refused = refused or str(error)
    if refused:
        print(f"ecopipe.aggregate: error: {refused}", file=sys.stderr)
        return 2
    try:
        experiment, sweep, scope = _scope(MlflowClient(tracking_uri=uris[0]), args.experiment, args.sweep)
    except MlflowException as error:
        print(f"ecopipe.aggregate: error: --sweep {args.sweep}: {error.message}", file=sys.stderr)
        return 2
    if args.log and not sweep:
        print("ecopipe.aggregate: error: --log needs a sweep (--sweep PARENT_RUN_ID)", file=sys.stderr)
        return 2
    print(f"aggregating {scope}" + (f" in {len(uris)} stores" if len(uris) > 1 else ""))
    # The experiment's name is read from the store: anyone who may write there chose it.
    out = args.out or Path("aggregate") / _folder_name(experiment + (f"-{sweep[:8]}" if sweep else ""))
    try:
        check_writable_folder(out.resolve(), f"--out {out}")
        result = aggregate(
            uris,
            experiment,
            sweep,
            args.filter,
            out,
            store_uri=args.store_uri,
            reap_after_h=args.reap_after_h,
            rating=args.rating,
            rating_reference=reference,
        )
    except (AggregationError, ConfigError) as error:
        print(f"ecopipe.aggregate: error: {error}", file=sys.stderr)
        return 2
    if args.log:
        log_to_run(MlflowClient(tracking_uri=uris[0]), sweep, result)
    print("\n".join(result.notes[:3]))
    if headline := render.headline_text(result.tables, result.titles):
        print(f"\n{headline}\n")
    print(f"wrote {len(result.files)} files to {out.resolve()}")
    print(f"  {out.resolve() / 'summary.md'}  {out.resolve() / 'summary.html'}")
    if result.jobs.empty:
        print("ecopipe.aggregate: no job runs matched", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
