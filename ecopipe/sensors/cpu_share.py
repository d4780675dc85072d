"""How many CPUs the job may use: its affinity mask, capped by a cgroup CPU quota.

An estimate charges the job for these CPUs only: a container limited to 2 CPUs on a 128-thread host,
or a VM that sees 2 vCPUs of a 64-core package, is charged two threads' share of the package, never
the whole package spread over whatever the OS shows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class VisibleCpus:
    count: float  # may be fractional under a quota (1.5 CPUs)
    note: str  # where the figure came from


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limit(root: Path, group: str) -> float | None:
    """Smallest cpu.max quota/period from the job's cgroup up to the root (a parent's cap applies)."""
    limits = []
    folder = root / group.lstrip("/")
    while True:
        text = _read(folder / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max" and period:
                limits.append(int(quota) / int(period))
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits, default=None)


def _v1_limit(root: Path, group: str) -> float | None:
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        folder = root / controller / group.lstrip("/")
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota is not None and period:
            return int(quota) / int(period) if int(quota) > 0 else None  # -1: no quota
    return None


def cgroup_cpu_limit(proc_cgroup: str, root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the job's cgroup quota allows (cgroup v2 cpu.max or v1 cfs_quota_us); None: no quota.

    `proc_cgroup` is the text of /proc/self/cgroup ("0::/path" for v2, "N:cpu,cpuacct:/path" for v1).
    """
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limit = _v2_limit(root, group)
            if limit is not None:
                return limit
        elif "cpu" in controllers.split(","):
            limit = _v1_limit(root, group)
            if limit is not None:
                return limit
    return None


def visible_cpus(
    affinity: int | None = None, proc_cgroup: str | None = None, root: Path = CGROUP_ROOT
) -> VisibleCpus:
    """The CPUs this process may run on (affinity), capped by its cgroup quota; arguments for tests."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if proc_cgroup is None:
        proc_cgroup = _read(PROC_SELF_CGROUP) or ""
    quota = cgroup_cpu_limit(proc_cgroup, root)
    if quota is not None and quota < affinity:
        return VisibleCpus(quota, f"cgroup CPU quota {quota:g} CPUs (affinity allows {affinity})")
    return VisibleCpus(float(affinity), f"{affinity} CPUs in the process's affinity mask")
