"""The Hydra callback that owns a sweep: its MLflow parent run, device policy, progress and aggregation.

`on_multirun_start` runs once, in the launching process, before any job: it creates the store, the
experiment and the parent run (concurrent jobs creating a fresh SQLite store race on its schema),
marks runs of killed jobs FAILED, and announces the parent run and tracking URI to the jobs through
the environment, which every launcher (basic, joblib, submitit, ray) hands down to its workers.
`on_multirun_end` aggregates the sweep, closes the parent run and exits with the number of failed jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import psutil
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from tqdm import tqdm

from ecopipe.config import ConfigError, TrackingConfig
from ecopipe.config_checks import check_experiment_name
from ecopipe.credentials import redact
from ecopipe.hardware import cuda_available
from ecopipe.logs import logs_above_progress, warn_once
from ecopipe.monitor.sampler import remove_traces_of
from ecopipe.names import SWEEP_KIND, Metric, Tag
from ecopipe.slurm import is_slurm_launcher, restrict_sharing
from ecopipe.stops import Stopped, before_stopping
from ecopipe.tracking.experiment import StopSafeClient, open_experiment
from ecopipe.tracking.liveness import (
    end_run,
    gone_from_this_host,
    process_tags,
    reap_dead_runs,
    running_jobs_of_sweep,
)
from ecopipe.tracking.resume import code_version, reused_from_other_code, reused_runs
from ecopipe.tracking.run import PARENT_RUN_ENV
from ecopipe.tracking.store import artifact_location, check_tracking_uri, check_writable_folder, resolve_uri
from ecopipe.ui_view import view_line
from ecopipe.workloads.hub import hub_unreachable

log = logging.getLogger(__name__)

SWEEP_SIZE_ENV = "ECOPIPE_SWEEP_SIZE"
JOB_STOP_GRACE_S = 60.0  # for a stopped job to end its run (its last trial and trace are logged first)
SWEEP_FORMAT = "{desc}: {n_fmt}/{total_fmt} jobs done{postfix} [{elapsed}<{remaining}]"  # , failed=N


def sweep_size(config: DictConfig) -> int:
    """Number of jobs the basic sweeper will make of the command line's overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    # As BasicSweeper does: the preset's sweeper params first, the command line's overrides after them.
    params = config.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    parsed += parser.parse_overrides(list(config.hydra.overrides.task))
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


def _restrict_parallelism(config: DictConfig) -> None:
    """Parallel launchers may not put two jobs on one measured device."""
    if is_slurm_launcher(config):
        restrict_sharing(config)
        return
    launcher = config.hydra.launcher
    if "n_jobs" not in launcher or launcher.n_jobs == 1:
        return
    if cuda_available() and config.hardware.device != "cpu":
        reason = "GPU jobs never share a device: their energy readings would mix"
    elif not config.monitor.allow_shared_cpu:
        reason = "CPU jobs side by side share the CPU sensors (monitor.allow_shared_cpu=true allows it)"
    else:
        log.warning(
            "monitor.allow_shared_cpu=true: %s jobs share the CPU, so their CPU and RAM energy figures mix.",
            launcher.n_jobs,
        )
        return
    log.warning("hydra/launcher n_jobs=%s reduced to 1: %s.", launcher.n_jobs, reason)
    with read_write(config.hydra), open_dict(launcher):
        launcher.n_jobs = 1


def end_stopped_sweep(stop: Stopped) -> None:
    """A signal stopped the sweep this process launched: end its parent run KILLED, naming the signal.

    A job whose worker the launcher killed before it could end its run (one that opened its run after
    the stop was handed on, or did not end it within the grace time) is ended KILLED here, and its trace
    folder removed. Job processes inherit the parent's id too; only the process that created it (its pid
    tag) ends it.
    """
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        return
    client = StopSafeClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(parent)
    if run.data.tags.get(Tag.PID) != str(os.getpid()) or run.info.status != "RUNNING":
        return
    for job in running_jobs_of_sweep(client, parent):
        if gone_from_this_host(job.data.tags):
            why = f"{stop}: the sweep's launcher ended its worker process before the job ended its run"
            end_run(client, job.info.run_id, why)
            remove_traces_of(int(job.data.tags[Tag.PID]))
    end_run(client, parent, str(stop))
    print(f"sweep: {stop}; parent run {parent} ended KILLED", file=sys.stderr)


def _hand_stop_to_jobs(signum: int) -> None:
    """Hand a stop that reached the launcher to the jobs running in its worker processes, and wait until
    they have ended their runs (KILLED, their traces removed), up to JOB_STOP_GRACE_S.

    `kill` and Kubernetes signal only the launcher's pid, and a pool launcher (joblib) kills its workers
    outright once the stop is raised here: without this, their runs would stay RUNNING.
    """
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        return
    client = StopSafeClient(os.environ["MLFLOW_TRACKING_URI"])
    workers = {process.pid for process in psutil.Process().children(recursive=True)}
    jobs = [r for r in running_jobs_of_sweep(client, parent) if int(r.data.tags[Tag.PID]) in workers]
    if not jobs:
        return
    print(f"sweep: {signal.Signals(signum).name} handed to {len(jobs)} running jobs", file=sys.stderr)
    for job in jobs:
        with suppress(ProcessLookupError):
            os.kill(int(job.data.tags[Tag.PID]), signum)
    deadline = time.monotonic() + JOB_STOP_GRACE_S
    waiting = {job.info.run_id for job in jobs}
    while waiting and time.monotonic() < deadline:
        time.sleep(0.2)
        waiting = {run_id for run_id in waiting if client.get_run(run_id).info.status == "RUNNING"}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:2000]


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.progress: tqdm | None = None  # in the launching process only (workers never start a sweep)
        # Log lines go above the live sweep line, not glued to its end: once for the sweep, and again
        # for each job, whose start replaces the console handlers (Hydra's job_logging).
        self.sweep_logs, self.job_logs = ExitStack(), ExitStack()

    def _tracking(self, config: DictConfig) -> TrackingConfig:
        return OmegaConf.to_object(config.tracking)  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        # A launcher (submitit) pickles the callbacks for its workers: the live line stays here.
        return self.__dict__ | {"progress": None, "sweep_logs": ExitStack(), "job_logs": ExitStack()}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = self._tracking(config)
        # Hydra turns a callback's exception into a warning: a sweep that cannot work stops here, in one
        # line (nothing can be recorded in a store that cannot work).
        try:
            _restrict_parallelism(config)
            check_experiment_name(tracking.experiment)
            artifact_location(resolve_uri(tracking), tracking.experiment, tracking.artifact_location)
            check_tracking_uri(resolve_uri(tracking))
            check_writable_folder(Path(config.hydra.sweep.dir).resolve(), "hydra.sweep.dir")
        except ConfigError as error:
            print(f"ecopipe: error: {error}", file=sys.stderr)
            sys.exit(2)
        unreachable = hub_unreachable()  # once for the whole sweep, before any job imports a hub library
        if unreachable and not unreachable.startswith("HF_HUB_OFFLINE"):
            log.warning(
                "Hugging Face hub unreachable (%s): jobs that need it load from the cache only.", unreachable
            )
        try:  # Hydra turns anything but SystemExit into a warning, and the sweep would run without a parent
            self._open_parent(config, tracking)
        except Exception as error:
            print(
                f"ecopipe: error: the sweep could not start its MLflow run: {_one_line(error)}",
                file=sys.stderr,
            )
            sys.exit(2)
        if not config.hydra.launcher._target_.endswith(".BasicLauncher"):  # jobs run in other processes
            before_stopping(_hand_stop_to_jobs)
        # Every job, in this process or another, logs to the same store under this parent.
        os.environ["MLFLOW_TRACKING_URI"] = resolve_uri(tracking)
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        os.environ[SWEEP_SIZE_ENV] = str(sweep_size(config))
        warn_once()
        log.info("sweep of %s jobs, parent MLflow run %s", os.environ[SWEEP_SIZE_ENV], self.parent_run_id)
        self.progress = tqdm(total=int(os.environ[SWEEP_SIZE_ENV]), desc="sweep", unit="job", file=sys.stderr,
                             disable=None, bar_format=SWEEP_FORMAT, postfix={"failed": 0})  # fmt: skip
        self.sweep_logs.enter_context(logs_above_progress())

    def _open_parent(self, config: DictConfig, tracking: TrackingConfig) -> None:
        client, experiment = open_experiment(tracking)
        reap_dead_runs(client, experiment, tracking.reap_after_h)
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        parent = client.create_run(
            experiment,
            run_name=f"sweep {Path(sweep_dir).parent.name}/{Path(sweep_dir).name}",
            tags={
                Tag.KIND: SWEEP_KIND,
                Tag.SWEEP_DIR: sweep_dir,
                Tag.OVERRIDES: redact(" ".join(config.hydra.overrides.task)),
                Tag.CODE_VERSION: code_version(),
                **process_tags(),
            },
        )
        self.parent_run_id = parent.info.run_id

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.progress is None or self.parent_run_id is None:
            return
        self.job_logs.close()
        client, experiment = open_experiment(self._tracking(config))
        failed = client.search_runs(
            [experiment],
            f"tags.`{Tag.SWEEP_ID}` = '{self.parent_run_id}' and attributes.status = 'FAILED'",
            max_results=10000,
        )
        self.progress.set_postfix(failed=len(failed), refresh=False)
        self.progress.update()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.progress is not None:
            self.job_logs.enter_context(logs_above_progress())
        if config.hydra.mode == RunMode.MULTIRUN:
            overrides = " ".join(config.hydra.overrides.task)
            log.info(
                "job %d of %s: %s", config.hydra.job.num + 1, os.environ.get(SWEEP_SIZE_ENV, "?"), overrides
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        assert self.parent_run_id is not None
        if self.progress is not None:
            self.sweep_logs.close()
            self.progress.close()
        try:  # Hydra turns anything but SystemExit into a warning: the sweep would exit 0, its parent RUNNING
            self._end(config)
        except Exception as error:
            why = f"the sweep's end failed: {_one_line(error)}"
            with suppress(Exception):  # the store itself may be what failed
                client = StopSafeClient(resolve_uri(self._tracking(config)))
                end_run(client, self.parent_run_id, why, "FAILED", "failed")
            print(f"ecopipe: error: {why}", file=sys.stderr)
            sys.exit(1)

    def _end(self, config: DictConfig) -> None:
        """Aggregate the sweep, log its tables to the parent, end it; exit with the failed jobs' count."""
        from ecopipe.aggregate import aggregate, log_to_run
        from ecopipe.aggregation.render import headline_text

        tracking = self._tracking(config)
        client, experiment = open_experiment(tracking)
        children = client.search_runs(
            [experiment], f"tags.`{Tag.SWEEP_ID}` = '{self.parent_run_id}'", max_results=50000
        )
        failed = [r for r in children if r.info.status == "FAILED"]
        result = aggregate(
            resolve_uri(tracking),
            tracking.experiment,
            sweep_id=self.parent_run_id,
            out_dir=Path(config.hydra.sweep.dir) / "aggregate",
        )
        log_to_run(client, self.parent_run_id, result)
        reused = reused_runs(client, self.parent_run_id)
        other_code = reused_from_other_code(client, self.parent_run_id)
        skipped = max(int(os.environ.get(SWEEP_SIZE_ENV, "0")) - len(children) - len(reused), 0)
        for key, value in {
            Metric.JOBS: len(children),
            Metric.JOBS_FAILED: len(failed),
            Metric.JOBS_REUSED: len(reused),
            Metric.JOBS_SKIPPED: skipped,
        }.items():
            client.log_metric(self.parent_run_id, key, value)
        client.set_terminated(self.parent_run_id, status="FAILED" if failed else "FINISHED")
        older = f", {len(other_code)} of them by another code version" if other_code else ""
        if headline := headline_text(result.tables, result.titles):
            print(f"\n{headline}\n")
        print(
            f"sweep: {len(children)} jobs run, {len(failed)} failed, {len(reused)} reused (measured "
            f"earlier{older}; in the tables, column reused), {skipped} skipped (not fitting the grid); "
            f"tables in {Path(config.hydra.sweep.dir) / 'aggregate'}"
        )
        print(view_line(resolve_uri(tracking), experiment))
        if other_code:
            this = code_version()
            print(f"  rerun_other_version=true measures again the {len(other_code)} that code {this} did not")
        for run in failed:
            print(f"  FAILED {run.info.run_name}: {run.data.tags.get(Tag.ERROR, '?')}", file=sys.stderr)
        if failed:
            sys.exit(min(len(failed), 125))  # the exit status says how many jobs failed
