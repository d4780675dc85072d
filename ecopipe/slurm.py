"""SLURM (`hydra/launcher=slurm`): which node resources a job may share, and which SLURM job it was.

A measured device is never shared: every job gets its node to itself (`--exclusive`) and at most one
GPU. A GPU job's GPU is bound to it by SLURM, but the node's RAPL counters see every job on the node,
and its CPU-side work (data loading, tokenising) slows beside other jobs. `monitor.allow_shared_cpu=true`
lets jobs share nodes, with a warning of what that does to the figures (README, "On SLURM").
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from collections.abc import Mapping

from omegaconf import DictConfig, open_dict, read_write

from ecopipe.config import ConfigError
from ecopipe.names import Tag

log = logging.getLogger(__name__)

# The variables SLURM sets in a job's environment, as run tags.
JOB_TAGS = {
    "SLURM_JOB_ID": Tag.SLURM_JOB_ID,
    "SLURM_ARRAY_JOB_ID": Tag.SLURM_ARRAY_JOB_ID,
    "SLURM_ARRAY_TASK_ID": Tag.SLURM_ARRAY_TASK_ID,
    "SLURM_CLUSTER_NAME": Tag.SLURM_CLUSTER,
    "SLURMD_NODENAME": Tag.SLURM_NODE,
}
ARRAY_TAG = JOB_TAGS["SLURM_ARRAY_JOB_ID"]


def job_tags() -> dict[str, str]:
    """The SLURM job this process runs in (empty outside SLURM)."""
    return {tag: os.environ[var] for var, tag in JOB_TAGS.items() if os.environ.get(var)}


def is_slurm_launcher(config: DictConfig) -> bool:
    return str(config.hydra.launcher.get("_target_", "")).endswith("submitit_launcher.SlurmLauncher")


def gpus_per_job(launcher: DictConfig) -> int:
    """GPUs one job asks for: per task times tasks, else per node times nodes."""
    if launcher.get("gpus_per_task"):
        return int(launcher.gpus_per_task) * int(launcher.get("tasks_per_node") or 1)
    return int(launcher.get("gpus_per_node") or 0) * int(launcher.get("nodes") or 1)


SHARED_NODE_WARNING = (
    "monitor.allow_shared_cpu=true: SLURM jobs may share a node. RAPL counts every job on it: each job is "
    "charged its share of busy CPU time (monitor.rapl_attribution=job_share), which apportions the node's "
    "energy by CPU time only; estimates charge each job's own CPU time; a GPU stays the job's own, but "
    "its throughput, and so its energy per inference, moves with what the other jobs do."
)


def restrict_sharing(config: DictConfig) -> None:
    """Refuse jobs of more than one GPU; give every job its node (--exclusive) unless sharing is allowed."""
    launcher = config.hydra.launcher
    gpus = gpus_per_job(launcher)
    if gpus > 1 or (gpus and int(launcher.get("tasks_per_node") or 1) > 1):
        raise ConfigError(
            f"hydra/launcher=slurm asks {gpus} GPUs and {launcher.get('tasks_per_node')} tasks per job: an "
            "ecopipe job measures one GPU in one task, so each job takes one "
            "(hydra.launcher.gpus_per_node=1 hydra.launcher.tasks_per_node=1), or 0 for CPU jobs."
        )
    if config.monitor.allow_shared_cpu:
        log.warning(SHARED_NODE_WARNING)
        return
    with read_write(config.hydra), open_dict(launcher):
        launcher.additional_parameters = {**(launcher.get("additional_parameters") or {}), "exclusive": True}
    log.info("SLURM jobs run with --exclusive: jobs side by side would share the node's sensors.")


_ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "STAGE_OUT",
}


def _slurm(*command: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None  # no SLURM here, or it does not answer


@functools.cache
def local_cluster() -> str | None:
    """The name of the SLURM cluster this machine's commands talk to, if any."""
    done = _slurm("scontrol", "show", "config")
    found = re.search(r"^ClusterName\s*=\s*(\S+)", done.stdout, re.MULTILINE) if done else None
    return found.group(1) if found else None


def job_ended(tags: Mapping[str, str]) -> bool | None:
    """Whether the SLURM job a run names is over (None: not a SLURM run, or not this cluster's)."""
    job = tags.get(JOB_TAGS["SLURM_JOB_ID"])
    if not job or tags.get(JOB_TAGS["SLURM_CLUSTER_NAME"]) != local_cluster():
        return None
    done = _slurm("squeue", "-h", "-j", job, "-o", "%T")
    if done is None:
        return None
    if done.returncode != 0:  # SLURM forgets a job some minutes after it ends
        return True if "Invalid job id" in done.stderr else None
    return not (set(done.stdout.split()) & _ACTIVE)
