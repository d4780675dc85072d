"""The experiment: created once with its description and the saved view of its headline columns,
opened through a client that a stop signal cannot cut in half, and searched page by page."""

from __future__ import annotations

import functools
import logging
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ecopipe.config import TrackingConfig
from ecopipe.names import Tag
from ecopipe.stops import stops_deferred
from ecopipe.tracking.store import artifact_location, resolve_uri, schema_lock
from ecopipe.ui_view import seed_view, view_path

log = logging.getLogger(__name__)


# The MLflow UI reads these experiment tags: its description (Tag.NOTE), and which page an experiment
# opens on (without a kind, MLflow 3 may open an experiment on its GenAI traces page, empty here).
KIND = "custom_model_development"


_OLD_NOTE_START = "**ecopipe**: what ML inference costs the planet."  # the note before the view's link


def experiment_description(experiment_id: str) -> str:
    return f"""\
**[Open the headline view]({view_path(experiment_id)})**: energy and CO2e per 1,000 inferences, ESS,
hardware and whether each figure is *measured* or an *ESTIMATE*, one row per run (MLflow does not
apply a saved view by itself: this link, or the views menu, opens it).

**ecopipe**: what ML inference costs the planet. One run per job (model x dataset x precision x
hardware, batch size, region); a sweep is a parent run whose children are its jobs, and whose
artifacts hold the comparison tables (`summary.md`, `tables/`, `plots/`, `data/`).

- Open a run: its description is the job's summary (energy, CO2e, water, ESS, throughput, quality,
  hardware, and each energy source, *measured* or *ESTIMATE*), every figure with its band.
- The `headline/` metrics carry their unit in their name (per 1,000 inferences: energy in J, CO2e in
  mg, water in mL), each energy-derived one with its band in `_low` / `_high`; the tag
  `{Tag.FIGURES}` says what the figures are (*measured*, *ESTIMATE* or *SIMULATED*).
- ESS is effective parameters (millions) per g CO2e: it rewards size. Compare it only between runs
  of one task and data set.
- The System metrics tab of a run plots its power (an estimate, named so, where the machine has no
  counter) and utilisation trace.
"""


def ensure_experiment(client: MlflowClient, uri: str, name: str, artifacts: str | None = None) -> str:
    """Create the store's schema and the experiment once, with its description and the saved view of
    its headline columns; return its id."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_location(uri, name, artifacts), tags={Tag.EXPERIMENT_KIND: KIND}
        )
        client.set_experiment_tag(experiment_id, Tag.NOTE, experiment_description(experiment_id))
        seed_view(client, experiment_id, {})
        return experiment_id
    if artifacts and experiment.artifact_location.rstrip("/") != artifacts.rstrip("/"):
        log.warning(
            "tracking.artifact_location=%s, but experiment %r keeps its artifacts in %s (set when it was "
            "created; MLflow cannot move them)", artifacts, name, experiment.artifact_location,
        )  # fmt: skip
    described = {Tag.EXPERIMENT_KIND: KIND, Tag.NOTE: experiment_description(experiment.experiment_id)}
    for key, value in described.items():
        # Missing (an experiment made by an older ecopipe), or ecopipe's own older note: written anew;
        # a user's own note stays.
        if key not in experiment.tags or experiment.tags[key].startswith(_OLD_NOTE_START):
            client.set_experiment_tag(experiment.experiment_id, key, value)
    seed_view(client, experiment.experiment_id, experiment.tags)
    return experiment.experiment_id


class StopSafeClient(MlflowClient):
    """An MlflowClient whose calls a stop signal cannot cut in half: it is raised when the call ends."""

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def whole(*args: Any, **kwargs: Any) -> Any:
            with stops_deferred():
                return attribute(*args, **kwargs)

        return whole


def open_experiment(cfg: TrackingConfig) -> tuple[MlflowClient, str]:
    """A client on the configured store and the id of its experiment, created on first use."""
    uri = resolve_uri(cfg)
    with schema_lock(uri):  # creating the client creates the schema; get-or-create the experiment too
        with stops_deferred():  # creating the client may create the schema
            client = StopSafeClient(tracking_uri=uri)
        return client, ensure_experiment(client, uri, cfg.experiment, cfg.artifact_location)


SEARCH_PAGE = 1000  # runs per search_runs call: a tracking server caps a page; SQL stores accept more


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    """Every run a search matches, page by page (one call with a large max_results stops silently at
    it). A list, not a generator: a caller that changes runs while paging would shift the pages."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
