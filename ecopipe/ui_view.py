"""The run list as the MLflow UI shows it at first look: a saved view of the headline columns.

MLflow has no server-side default for the run list's columns (it opens on Run Name, Created, Dataset,
Duration, Source, Models). Since 3.15 its UI has saved views: an experiment tag
`mlflow.sharedViewState.<id>` holding `{"name", "createdAt", "state"}`, `state` a JSON string of the
run list's columns, their widths and its sort, opened by the link `#/experiments/<id>/runs?
viewStateShareKey=<id>`. The UI never applies a view by itself, so the link heads the experiment's
description and ends every job's and sweep's output. The format is the UI's own, not an API: MLflow is
pinned in pyproject.toml, and tests/test_ui.py opens the view in a real browser.
"""

from __future__ import annotations

import json
import time

from mlflow import MlflowClient

from ecopipe.credentials import redact
from ecopipe.names import Tag, TagFamily
from ecopipe.report import (
    HEADLINE_CO2E,
    HEADLINE_ENERGY,
    HEADLINE_ESS,
    HEADLINE_THROUGHPUT,
    HEADLINE_WATER,
)

VIEW_ID = "ecopipe-headline"
VIEW_TAG = TagFamily.SHARED_VIEW.of(VIEW_ID)
VIEW_NAME = "ecopipe: the headline figures"
WRITER, VIEW_VERSION = "ecopipe", 1  # marks a view ecopipe wrote (the UI keeps only its own fields)
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` and `mlflow ui` serve a local store


def _key(kind: str, name: str) -> str:
    """A column's key in the UI's state; without the backticks the page shows no rows."""
    return f"{kind}.`{name}`"


HEADLINE_METRICS = (HEADLINE_ENERGY, HEADLINE_CO2E, HEADLINE_ESS, HEADLINE_WATER, HEADLINE_THROUGHPUT)
# Left to right, what a reader needs first: the answer, then what the figures are and on what.
COLUMNS = (
    _key("attributes", "Description"),  # the compact answer: `12.7 mJ/1k est. · 2.6 µg CO2e/1k · ESS 250`
    _key("tags", Tag.DATASET),  # ESS compares only within one data set
    *(_key("metrics", m) for m in HEADLINE_METRICS[:3]),
    _key("tags", Tag.FIGURES),  # measured, ESTIMATE or SIMULATED
    _key("tags", Tag.HARDWARE),
    *(_key("metrics", m) for m in HEADLINE_METRICS[3:]),
    _key("tags", TagFamily.ENERGY_SOURCE.of("cpu")),
    _key("tags", TagFamily.ENERGY_SOURCE.of("gpu")),
)
# Narrower columns cut the headers (`headline/co2e_r…`).
COLUMN_WIDTHS = {_key("attributes", "Description"): 330} | {_key("metrics", m): 240 for m in HEADLINE_METRICS}
# Sorted by a metric, every run is a row: sorted by time, a sweep's jobs stay folded under its parent.
ORDER_BY = _key("metrics", HEADLINE_ENERGY)


def view_state() -> dict[str, object]:
    return {
        "selectedColumns": list(COLUMNS),
        "columnOrder": list(COLUMNS),
        "columnWidths": COLUMN_WIDTHS,
        "orderByKey": ORDER_BY,
        "orderByAsc": True,
    }


def seed_view(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """Write the view on the experiment (`tags`: the experiment's) where it has none, or ecopipe's own
    with other columns (an older ecopipe); a view the user saved over it (the UI drops the `ecopipe`
    mark when it writes one) stays."""
    state = json.dumps(view_state(), separators=(",", ":"))
    if VIEW_TAG in tags:
        try:
            written = json.loads(tags[VIEW_TAG])
            if not isinstance(written, dict) or written.get(WRITER) is None or written.get("state") == state:
                return
        except json.JSONDecodeError:  # not a view at all: leave it to whoever wrote it
            return
    value = {"name": VIEW_NAME, "createdAt": int(time.time() * 1000), "state": state, WRITER: VIEW_VERSION}
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(value, separators=(",", ":")))


def view_path(experiment_id: str) -> str:
    """The view's link inside the UI (a fragment: the UI routes on it)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"


def _served(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _ui_address(uri: str) -> str:
    """Where the UI of a store is: its tracking server, or where `mlflow ui` serves a local store."""
    return redact(uri).rstrip("/") if _served(uri) else UI_ADDRESS


def view_url(uri: str, experiment_id: str) -> str:
    """The view's full address."""
    return f"{_ui_address(uri)}/{view_path(experiment_id)}"


def view_line(uri: str, experiment_id: str) -> str:
    """The last line of a job's or a sweep's output: the headline view, and for a store that no
    server serves, the command that serves it."""
    if _served(uri):
        return f"  view        {view_url(uri, experiment_id)}  (every run's headline figures)"
    return (
        f"  view        `mlflow ui --backend-store-uri {redact(uri)}` (in a checkout: `make ui "
        f"STORE=<its file>`), then {view_url(uri, experiment_id)}  (every run's headline figures)"
    )


def where(run_id: str, experiment_id: str, uri: str) -> str:
    """The last lines of a job's output: which run holds its figures, and how to open them in the UI."""
    if _served(uri):
        run = f"{_ui_address(uri)}/#/experiments/{experiment_id}/runs/{run_id}"
    else:
        run = f"{run_id} in {redact(uri)}"
    return f"  run         {run}\n{view_line(uri, experiment_id)}"
