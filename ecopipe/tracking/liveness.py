"""Whose run it is and whether it is alive: the user, host and process a run records, the runs this
user can vouch for, and the ending of runs that did not finish (those whose process is gone)."""

from __future__ import annotations

import contextlib
import functools
import getpass
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import psutil
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient

from ecopipe import slurm
from ecopipe.credentials import redact
from ecopipe.names import KILLED, SWEEP_KIND, Tag
from ecopipe.tracking.experiment import search_all

log = logging.getLogger(__name__)


def current_user() -> str:
    """The OS user, as MLflow's own clients name a run's user (tag mlflow.user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid): MLflow says "unknown" too
        return "unknown"


FUTURE_SKEW_S = 300.0  # how far a cluster machine's clock may run ahead of this one's


def vouched(run: Run) -> bool:
    """A run this reader can vouch for: logged by this user, started no later than now."""
    started_s = (run.info.start_time or 0) / 1000
    return run.info.user_id == current_user() and started_s <= time.time() + FUTURE_SKEW_S


def process_tags() -> dict[str, str]:
    me = psutil.Process()
    return {
        Tag.USER: current_user(),
        Tag.HOST: socket.gethostname(),
        Tag.PID: str(me.pid),
        Tag.PID_STARTED: f"{me.create_time():.3f}",
        **_process_space(),
    }


@functools.cache  # read once per process: the reaper asks for it once per RUNNING run
def _process_space() -> dict[str, str]:
    """Where a pid means this process: the machine's boot and the pid namespace (containers on one
    host share its boot but not its pids, and may share its host name)."""
    space = {}
    with contextlib.suppress(OSError):
        space[Tag.BOOT_ID] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        space[Tag.PID_NAMESPACE] = os.readlink("/proc/self/ns/pid")
    return space


def _process_alive(tags: Mapping[str, str]) -> bool:
    try:
        process = psutil.Process(int(tags[Tag.PID]))
        same = abs(process.create_time() - float(tags[Tag.PID_STARTED])) < 1e-2  # not a reused pid
        return same and process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped by its parent
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return False


def running_jobs_of_sweep(client: MlflowClient, parent_id: str) -> list[Run]:
    """The sweep's job runs still RUNNING."""
    experiment = client.get_run(parent_id).info.experiment_id
    return search_all(
        client, [experiment], f"tags.`{Tag.SWEEP_ID}` = '{parent_id}' and attributes.status = 'RUNNING'"
    )


def _visible_from_here(tags: Mapping[str, str]) -> bool:
    """Whether a run's pid can be looked up here: same host name, boot and pid namespace (a run that
    recorded no boot or namespace, from an older ecopipe, cannot be judged)."""
    here = _process_space()
    return (
        tags.get(Tag.HOST) == socket.gethostname()
        and bool(here)
        and all(tags.get(key) == value for key, value in here.items())
    )


def gone_from_this_host(tags: Mapping[str, str]) -> bool:
    """Whether a run's process ran here and has ended (another machine's process cannot be seen)."""
    return _visible_from_here(tags) and not _process_alive(tags)


def end_run(client: MlflowClient, run_id: str, why: str, status: str = "KILLED", state: str = KILLED) -> None:
    """End a run that did not finish, saying why: `ecopipe.error` (credentials redacted) and
    `ecopipe.status` (killed or failed), then its MLflow status, KILLED or FAILED."""
    tags = [RunTag(Tag.ERROR, redact(why)[:5000]), RunTag(Tag.STATUS, state)]
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def reap_dead_runs(client: MlflowClient, experiment: str, foreign_after_h: float | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs whose process is known to be gone (SIGKILL, out of memory).

    A run of a SLURM job of this machine's cluster is dead once SLURM no longer runs the job; else a run
    whose pid can be looked up here (same host, boot and pid namespace) is dead when that pid, started
    when it was, is gone. Any other run (another machine's, a container's) is left RUNNING, unless it
    started more than `foreign_after_h` hours ago (a limit the user sets: a long job may run for days).
    """
    now = time.time()
    reaped = []
    for run in search_all(client, [experiment], "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(Tag.KIND) == SWEEP_KIND and _process_alive(tags):
            continue
        ended = slurm.job_ended(tags)  # SLURM knows about its jobs on every node
        if ended is not None:
            dead = ended
        elif _visible_from_here(tags):
            dead = not _process_alive(tags)
        else:
            dead = foreign_after_h is not None and now - run.info.start_time / 1000 > foreign_after_h * 3600
        if dead:
            where = f"process {tags.get(Tag.PID)} on {tags.get(Tag.HOST)}"
            if ended:
                where += f" (SLURM job {tags[slurm.JOB_TAGS['SLURM_JOB_ID']]}, no longer running)"
            elif not _visible_from_here(tags):
                where += f" (not seen from here; started over {foreign_after_h:g} h ago)"
            reason = f"{where} ended without closing its run"
            end_run(
                client, run.info.run_id, f"killed: {reason} (SIGKILL or out of memory?)", "FAILED", KILLED
            )
            reaped.append(run.info.run_id)
            log.warning("run %s marked FAILED: %s", run.info.run_id, reason)
    return reaped
