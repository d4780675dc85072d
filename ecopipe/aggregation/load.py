"""Runs of a tracking store as one flat DataFrame: one row per run, `tags.*`, `params.*`, `metrics.*` columns.

Two readers return the same frame. For a `sqlite:///` or `postgresql://` store (also the PostgreSQL
database behind a tracking server, given as `store_uri`) the tables are read directly with SQL
(`runs`, `tags`, `params`, `latest_metrics`; schema of mlflow 3.17's `store/tracking/dbmodels/models.py`),
a query per table over the selected runs, pivoted in pandas: seconds for 10,000 runs, where
`search_runs` builds a Python object per metric, param and tag of every run (57 s for 10,000 through
a server). Any other store is read through `MlflowClient.search_runs`, page by page. An MLflow filter
string is applied by the store in the second reader and evaluated on the frame in the first
(filters.py); a filter the frame cannot evaluate (datasets, unusual attributes) sends the read to the
search reader.

Only what aggregation needs is kept: the metrics the tables' specs read (`specs.SPECS`: a new table
is its spec alone), those in `METRICS` and every `quality.*`, the tags under
`TAG_PREFIXES`, the params in `PARAMS`, and every param that tells the FINISHED job runs apart: a key
whose value differs among them, or that some of them lack. A job logs its whole resolved config as
params (`model.config_overrides.num_hidden_layers`...), so these are the config keys in which the runs
differ, from which rows.py derives the row key; the keys all runs share, most of a job's sixty, stay
in the store. The SQL reader asks the store for them first (one GROUP BY over the selected job runs'
params), then reads those; both readers then apply the same rule to the runs the filter kept.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, bindparam, create_engine, text

from ecopipe import names
from ecopipe.aggregation import specs
from ecopipe.aggregation.filters import Filter, UnsupportedFilter
from ecopipe.names import (
    CO2E_PER_1K,
    GROSS,
    HIGH,
    LOW,
    NET,
    SWEEP_KIND,
    WATER_PER_1K,
    Metric,
    MetricFamily,
    Param,
    Tag,
    TagFamily,
)
from ecopipe.tracking.experiment import search_all
from ecopipe.tracking.store import sqlite_path

log = logging.getLogger(__name__)

# The tables' figures that carry a band (report.band_metrics), and the PUE's range: their ends too.
BANDED = (
    names.energy_per_1k(GROSS),
    names.energy_per_1k(NET),
    names.energy_per_1k_tokens(GROSS),
    names.energy_per_1k_tokens(NET),
    CO2E_PER_1K,
    WATER_PER_1K,
    Metric.ESS,
    Metric.ESS_RUN,
    Metric.PUE,
    Metric.GPU_WH_PER_1K,
)
METRICS = (
    *BANDED,
    names.energy_per_1k_ci95(GROSS),
    names.energy_per_1k_ci95(NET),
    Metric.CO2E_CI95_PER_1K,
    Metric.THROUGHPUT,
    Metric.WINDOW_S,
    Metric.SAMPLES,
    Metric.EFFECTIVE_PARAMETERS,
    Metric.PARAMETERS,
    Metric.CARBON_INTENSITY,
    *(f"{name}{end}" for name in BANDED for end in (LOW, HIGH)),
)
METRIC_PREFIXES = (MetricFamily.QUALITY, MetricFamily.SELECTION)
TAG_PREFIXES = (
    names.NAMESPACE,  # every ecopipe tag: what the job ran, how its figures were obtained, its sweep
    TagFamily.ENERGY_SOURCE,
    TagFamily.ENERGY_MEASURED,
    TagFamily.ENERGY_UNMETERED,
    TagFamily.ENERGY_WHOLE_GPU,
    TagFamily.ENERGY_FALLBACK,
)
TAGS = (Tag.PARENT_RUN, Tag.ENERGY_COMPLETE)
PARAMS = tuple(Param)
RUN_COLUMNS = ("run_id", "run_name", "experiment_id", "status", "user_id", "start_time", "end_time")
SWEEP_TAGS = (Tag.SWEEP_ID, Tag.PARENT_RUN)
# A job run, as rows.tidy takes it: an ecopipe model tag, not a sweep's parent. A re-impact counts
# (it keeps the measured run's tags and params but not its config hash).
JOB_TAG = Tag.MODEL


def metric_names() -> set[str]:
    """The metrics read by name: every one a table's spec reads (specs.SPECS), and METRICS."""
    return {*METRICS, *(name for spec in specs.SPECS for name in spec.reads)}


def wanted_metric(key: str, wanted: set[str]) -> bool:
    return key in wanted or key.startswith(METRIC_PREFIXES)


def wanted_tag(key: str) -> bool:
    return key in TAGS or key.startswith(TAG_PREFIXES)


# ---------------------------------------------------------------------------------------------------
# Both readers produce three long frames (run_id, key, value) and the runs' attributes


@dataclass
class _Long:
    runs: pd.DataFrame
    tags: pd.DataFrame
    params: pd.DataFrame
    metrics: pd.DataFrame


def _wide(long: pd.DataFrame, prefix: str, index: pd.Index) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(index=index)
    wide = long.pivot(index="run_id", columns="key", values="value").reindex(index)
    wide.columns = [f"{prefix}{key}" for key in wide.columns]
    return wide


def _frame(long: _Long) -> pd.DataFrame:
    runs = long.runs.copy()
    runs["experiment_id"] = runs["experiment_id"].astype("str")
    for column in ("start_time", "end_time"):
        runs[column] = pd.to_numeric(runs[column]).astype("Int64")
    for column in ("run_id", "run_name", "status", "user_id"):
        runs[column] = runs[column].astype("str")
    runs.index = pd.Index(runs["run_id"])
    tags = _wide(long.tags, "tags.", runs.index).astype("str")
    params = _wide(long.params, "params.", runs.index).astype("str")
    metrics = _wide(long.metrics, "metrics.", runs.index).astype("float64")
    frame = pd.concat(
        [runs[list(RUN_COLUMNS)], *(p[sorted(p.columns)] for p in (tags, params, metrics))], axis=1
    )
    return frame.reset_index(drop=True)


def _telling_params(long: _Long) -> set[str]:
    """The param keys whose value differs among the FINISHED job runs, or that some of them lack."""
    tags = long.tags
    jobs = set(tags.loc[tags["key"] == JOB_TAG, "run_id"])
    jobs -= set(tags.loc[(tags["key"] == Tag.KIND) & (tags["value"] == SWEEP_KIND), "run_id"])
    jobs &= set(long.runs.loc[long.runs["status"] == "FINISHED", "run_id"])
    params = long.params[long.params["run_id"].isin(jobs)]
    counts = params.groupby("key")["value"].agg(["nunique", "size"])
    return set(counts.index[(counts["nunique"] > 1) | (counts["size"] < len(jobs))])


def _assemble(long: _Long, filt: Filter) -> pd.DataFrame:
    """The flat frame of the runs the filter keeps, with a column per wanted key any of them has."""
    if filt.clauses:
        full = _frame(long)
        ids = set(full.loc[filt.mask(full), "run_id"])
        long = _Long(
            *(part[part["run_id"].isin(ids)] for part in (long.runs, long.tags, long.params, long.metrics))
        )

    def only(part: pd.DataFrame, wanted: Callable[[str], bool]) -> pd.DataFrame:
        return part[part["key"].isin([k for k in part["key"].unique() if wanted(k)])]

    telling, wanted = _telling_params(long), metric_names()
    long = _Long(
        long.runs,
        only(long.tags, wanted_tag),
        only(long.params, lambda key: key in PARAMS or key in telling),
        only(long.metrics, lambda key: wanted_metric(key, wanted)),
    )
    frame = _frame(long).sort_values(["start_time", "run_id"], kind="stable")
    return frame.reset_index(drop=True)


def sql_store(uri: str) -> Engine | None:
    """An engine that reads the store's tables directly: a `sqlite:///` file (read-only) or a
    `postgresql://` database; None for any other store (a tracking server)."""
    path = sqlite_path(uri)
    if path is not None:
        readonly = f"{path.resolve().as_uri()}?mode=ro"
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(readonly, uri=True))
    if uri.startswith("postgresql"):
        return create_engine(uri)  # the password, if not in the URI, from PGPASSWORD or PGPASSFILE
    return None


def experiment_name(engine: Engine, experiment_id: str) -> str | None:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT name FROM experiments WHERE experiment_id = :id"), {"id": int(experiment_id)}
        ).scalar()
    engine.dispose()
    return found


def _read_sql(
    engine: Engine, experiment_ids: list[str], sweep_id: str | None, filt: Filter, reused: Sequence[str] = ()
) -> _Long:
    """Three queries in SQL that SQLite and PostgreSQL both run."""
    selected = "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active' AND experiment_id IN :experiments"
    args: dict[str, object] = {"experiments": [int(e) for e in experiment_ids]}
    expanding = ["experiments"]
    if sweep_id is not None:
        selected += (
            " AND (run_uuid IN (SELECT run_uuid FROM tags WHERE key IN :sweep_tags AND value = :sweep)"
        )
        args |= {"sweep_tags": list(SWEEP_TAGS), "sweep": sweep_id}
        expanding.append("sweep_tags")
        if reused:  # the earlier runs a resumed sweep reused (an empty list has no type PostgreSQL accepts)
            selected += " OR run_uuid IN :reused"
            args["reused"] = list(reused)
            expanding.append("reused")
        selected += ")"

    def query(sql: str, extra: dict[str, object], lists: list[str]) -> pd.DataFrame:
        statement = text(sql).bindparams(*(bindparam(name, expanding=True) for name in expanding + lists))
        statement = statement.bindparams(**args, **extra)
        # Compiled here, run on the driver's own cursor: SQLAlchemy's row objects would double the time.
        compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        values = compiled.params
        cursor = connection.connection.driver_connection.cursor()
        cursor.execute(compiled.string, [values[n] for n in compiled.positiontup or []] or values)
        return pd.DataFrame.from_records(cursor.fetchall(), columns=[c[0] for c in cursor.description])

    def long(table: str, value: str, exact: Iterable[str], prefixes: Iterable[str]) -> pd.DataFrame:
        exact, prefixes = sorted(set(exact)), list(prefixes)
        parts = ["key IN :exact"] if exact else []
        parts += [prefix_match.format(f":prefix{i}") for i in range(len(prefixes))]
        return query(
            f"SELECT run_uuid AS run_id, key, {value} AS value FROM {table} "
            f"WHERE run_uuid IN ({selected}) AND ({' OR '.join(parts) or '1 = 0'})",
            {"exact": exact} | {f"prefix{i}": pattern(prefix) for i, prefix in enumerate(prefixes)},
            ["exact"] if exact else [],
        )

    # Case-sensitive prefixes, `_` a literal: GLOB (which can use SQLite's key index), PostgreSQL's
    # starts_with.
    if engine.dialect.name == "sqlite":
        prefix_match = "key GLOB {}"

        def pattern(prefix: str) -> str:
            return prefix.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]") + "*"
    else:
        prefix_match = "starts_with(key, {})"

        def pattern(prefix: str) -> str:
            return prefix

    with engine.connect() as connection:
        runs = query(
            "SELECT run_uuid AS run_id, name AS run_name, experiment_id, status, user_id, start_time, "
            f"end_time FROM runs WHERE run_uuid IN ({selected})",
            {},
            [],
        )
        tags = long("tags", "value", [*TAGS, *filt.keys("tag")], TAG_PREFIXES)
        # The keys that tell the FINISHED job runs apart (_telling_params), found by the store: the
        # keys all of them share are never read. A filter may keep fewer runs: _assemble narrows these.
        jobs = (
            f"{selected} AND status = 'FINISHED' AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = :job)"
            " AND run_uuid NOT IN (SELECT run_uuid FROM tags WHERE key = :kind AND value = :sweep_kind)"
        )
        telling = query(
            f"SELECT key FROM params WHERE run_uuid IN ({jobs}) GROUP BY key HAVING COUNT(DISTINCT value) > 1"
            f" OR COUNT(*) < (SELECT COUNT(*) FROM runs WHERE run_uuid IN ({jobs}))",
            {"job": JOB_TAG, "kind": Tag.KIND, "sweep_kind": SWEEP_KIND},
            [],
        )
        params = long("params", "value", [*PARAMS, *filt.keys("parameter"), *telling["key"]], [])
        metrics = long(
            "latest_metrics",
            "CASE WHEN is_nan THEN NULL ELSE value END",
            [*metric_names(), *filt.keys("metric")],
            METRIC_PREFIXES,
        )
    engine.dispose()
    metrics["value"] = metrics["value"].astype("float64")
    return _Long(runs, tags, params, metrics)


def _read_search(
    client: MlflowClient,
    experiment_ids: list[str],
    sweep_id: str | None,
    filter_string: str | None,
    reused: Sequence[str] = (),
) -> _Long:
    searches = [filter_string or ""]
    if sweep_id is not None:
        # MLflow filters have no OR: one search per tag that links a run to its sweep, one for reused runs.
        links = [f"tags.`{tag}` = '{sweep_id}'" for tag in SWEEP_TAGS]
        if reused:
            links.append(f"attributes.run_id IN ({', '.join(repr(r) for r in reused)})")
        searches = [" AND ".join(s for s in (link, filter_string) if s) for link in links]
    seen: dict[str, object] = {}
    for search in searches:
        for run in search_all(client, experiment_ids, search):
            seen.setdefault(run.info.run_id, run)
    run_rows, tag_rows, param_rows, metric_rows = [], [], [], []
    wanted = metric_names()
    for run_id, run in seen.items():
        info, data = run.info, run.data  # type: ignore[attr-defined]
        run_rows.append(
            (
                run_id,
                info.run_name,
                info.experiment_id,
                info.status,
                info.user_id,
                info.start_time,
                info.end_time,
            )
        )
        tag_rows += [(run_id, k, v) for k, v in data.tags.items() if wanted_tag(k)]
        # Every param: _assemble keeps those that tell the runs apart, as it does the SQL reader's.
        param_rows += [(run_id, k, v) for k, v in data.params.items()]
        metric_rows += [(run_id, k, v) for k, v in data.metrics.items() if wanted_metric(k, wanted)]
    columns = ["run_id", "key", "value"]
    return _Long(
        pd.DataFrame(run_rows, columns=list(RUN_COLUMNS)),
        pd.DataFrame(tag_rows, columns=columns),
        pd.DataFrame(param_rows, columns=columns),
        pd.DataFrame(metric_rows, columns=columns).astype({"value": "float64"}),
    )


def read_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    sweep_id: str | None = None,
    filter_string: str | None = None,
    reader: str = "auto",
    store_uri: str | None = None,
    reused: Sequence[str] = (),
) -> pd.DataFrame:
    """Every active run of the experiments (of one sweep when `sweep_id` is given, with the earlier
    runs it `reused`) matching the filter.

    `reader`: "sql" reads a SQLite or PostgreSQL store's tables directly (the tracking URI's, or
    `store_uri`: the database behind a tracking server), "search" goes through `search_runs`, "auto"
    picks SQL wherever it can. The frames are identical.
    """
    if reader not in ("auto", "sql", "search"):
        raise ValueError(f"reader={reader!r}: expected auto, sql or search")
    filt = Filter.parse(filter_string)  # a malformed filter fails here, whichever reader runs
    engine = sql_store(store_uri or client.tracking_uri)
    if reader != "search" and engine is not None:
        try:
            filt.check_supported()
        except UnsupportedFilter as why:
            if reader == "sql":
                raise
            log.info("filter uses %s: reading through search_runs", why)
        else:
            return _assemble(_read_sql(engine, experiment_ids, sweep_id, filt, reused), filt)
    elif reader == "sql":
        raise ValueError(f"reader='sql' needs a sqlite:/// or postgresql:// store, not {client.tracking_uri}")
    return _assemble(_read_search(client, experiment_ids, sweep_id, filter_string, reused), Filter())
