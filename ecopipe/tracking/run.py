"""The job's run: opened with its process's tags and linked to the sweep's parent run, logged to in
batches, and ended FINISHED, or FAILED with its error (KILLED when a stop signal ended it)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ecopipe import slurm
from ecopipe.config import TrackingConfig
from ecopipe.credentials import redact
from ecopipe.names import KILLED, MetricFamily, Tag
from ecopipe.stops import Stopped, stops_deferred
from ecopipe.tracking.experiment import open_experiment
from ecopipe.tracking.liveness import end_run, process_tags

PARENT_RUN_ENV = "ECOPIPE_PARENT_RUN_ID"
_BATCH = 500  # MLflow accepts up to 1,000 metrics per batch call and 100 params


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class JobRun:
    """One MLflow run; metrics are kept finite (MLflow stores nan, but the UI and tables choke on it)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, "None" if v is None else redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, redact(str(v))) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def set_description(self, markdown: str) -> None:
        """The note the MLflow UI shows on the run's page (Markdown)."""
        self.client.set_tag(self.run_id, Tag.NOTE, redact(markdown))

    def log_system_metrics(self, samples: Any, started_at: float) -> None:
        """A trace (t_s plus one column per signal) as MLflow system metrics: `system/<column>`, one
        step per sample at its own time, which the run's System metrics tab plots."""
        start_ms = (started_at if math.isfinite(started_at) else time.time() - samples["t_s"].max()) * 1000
        items = [
            Metric(MetricFamily.SYSTEM.of(column), float(value), int(start_ms + t * 1000), step)
            for column in samples.columns
            if column != "t_s" and pd.api.types.is_numeric_dtype(samples[column])
            for step, (t, value) in enumerate(zip(samples["t_s"], samples[column], strict=True))
            if value is not None and math.isfinite(float(value))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def log_dataset(self, name: str, source: str, config: Mapping[str, Any]) -> None:
        """The run list's Dataset column: the data set the job ran on (an evaluation input), with a
        digest of its configuration, so that two runs on one data set cut alike show one digest."""
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
        dataset = Dataset(name, digest, source_type="ecopipe", source=json.dumps({"source": redact(source)}))
        context = InputTag(key=Tag.DATA_CONTEXT, value="eval")
        inputs = [DatasetInput(dataset, tags=[context])]
        # A sweep's jobs all log one data set, new to the experiment: their first writes can collide.
        _once_more_on_collision(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, redact(text), name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_text(self.run_id, redact(json.dumps(dict(data), indent=2, default=str)), name)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_frame_csv(self, frame: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False)
            self.client.log_artifact(self.run_id, str(path))


def _once_more_on_collision(write: Callable[[], None]) -> None:
    """Write a row that other jobs may be writing at the same moment. MLflow's SQL store adds a data
    set new to the experiment by select, then insert: two jobs' first writes of one can collide, and
    the loser's insert breaks the unique key (16 jobs on PostgreSQL did collide). The winner's row is
    then there, and the loser's second try finds it and links it; an error of any other cause comes
    again on that try and is raised."""
    try:
        write()
    except MlflowException:
        write()


def _tag_sweep_array(client: MlflowClient, parent: str, array_id: str) -> None:
    """Every job of the array writes the same value. MLflow's SQL store sets a tag by select, then
    insert: two jobs' first writes can collide, and the loser's insert breaks the unique key. It then
    finds the winner's value, its own, and the job goes on (16 jobs on PostgreSQL did collide); a
    different value is a real conflict, and is raised."""
    try:
        client.set_tag(parent, slurm.ARRAY_TAG, array_id)
    except MlflowException:
        if client.get_run(parent).data.tags.get(slurm.ARRAY_TAG) != array_id:
            raise


# The run list's Source column: what made the run (MLflow's fluent API would write the script's path).
SOURCE_TAGS = {Tag.SOURCE_NAME: "ecopipe", Tag.SOURCE_TYPE: "LOCAL"}


def open_run(cfg: TrackingConfig, run_name: str, tags: Mapping[str, Any]) -> JobRun:
    """Create a job run, linked to the sweep's parent run when one is announced in the environment."""
    client, experiment = open_experiment(cfg)
    all_tags = dict(tags) | process_tags() | slurm.job_tags() | SOURCE_TAGS
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        all_tags |= {Tag.PARENT_RUN: parent, Tag.SWEEP_ID: parent}
        if slurm.ARRAY_TAG in all_tags:  # the sweep's SLURM array, known once its first job runs
            _tag_sweep_array(client, parent, all_tags[slurm.ARRAY_TAG])
    run = client.create_run(
        experiment, run_name=run_name, tags={k: redact(str(v)) for k, v in all_tags.items() if v is not None}
    )
    return JobRun(client, run.info.run_id)


RECORDED_NOTE = "ecopipe: recorded as FAILED in MLflow run "


def fail_run(job: JobRun, error: BaseException) -> None:
    """End the run FAILED with the error, or KILLED when a stop signal ended it; a stop arriving
    meanwhile waits until the run is ended."""
    with stops_deferred():
        if isinstance(error, Stopped):
            end_run(job.client, job.run_id, str(error))
            return
        end_run(job.client, job.run_id, f"{type(error).__name__}: {error}", "FAILED", "failed")
        error.add_note(RECORDED_NOTE + job.run_id)


def recorded(error: BaseException) -> bool:
    """Whether a run already carries this error (else it struck before the run opened)."""
    return any(note.startswith(RECORDED_NOTE) for note in getattr(error, "__notes__", ()))


@contextmanager
def job_run(cfg: TrackingConfig, run_name: str, tags: Mapping[str, Any]) -> Iterator[JobRun]:
    """Open a run; end it FINISHED, or FAILED with the error as a tag, whatever happens inside."""
    job = open_run(cfg, run_name, tags)
    try:
        yield job
    except BaseException as error:
        fail_run(job, error)
        raise
    if job.client.get_run(job.run_id).data.tags.get(Tag.STATUS) == KILLED:  # reaped while alive
        job.client.delete_tag(job.run_id, Tag.STATUS)
        job.client.delete_tag(job.run_id, Tag.ERROR)
    job.client.set_terminated(job.run_id, status="FINISHED")
