"""Resuming and repeats: the config's hashes (with and without the repeat keys), the code version
that measured a run, the earlier run a job may reuse, and the sweep's links to the runs it reused."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ecopipe.names import Tag, TagFamily
from ecopipe.tracking.experiment import search_all
from ecopipe.tracking.liveness import vouched
from ecopipe.tracking.run import PARENT_RUN_ENV

# Top-level keys that do not change a result: where runs are logged, and how a sweep treats earlier runs.
NOT_A_RESULT_KEYS = ("tracking", "hydra", "rerun", "rerun_other_version", "skip_mismatched")
# Keys whose runs are repeats of one config: they share a table cell and a run name, and their spread
# is the between-run spread (the aggregation's tables, `repeat_hash`).
REPEAT_KEYS = ("seed",)


def config_hash(cfg: DictConfig, leave_out: tuple[str, ...] = ()) -> str:
    """Stable hash of the resolved job config; keys that do not change a result (tracking, sweep
    behaviour) are left out, and the top-level keys in `leave_out`."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(resolved, dict)
    resolved = {k: v for k, v in resolved.items() if k not in (*NOT_A_RESULT_KEYS, *leave_out)}
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def repeat_hash(cfg: DictConfig) -> str:
    """The same hash without the repeat keys: equal for the seeds of one config, different otherwise."""
    return config_hash(cfg, REPEAT_KEYS)


@functools.cache
def code_version() -> str:
    """The code that measures: the git commit of ecopipe's checkout, with a digest of its uncommitted
    changes to the code and configs when there are any (`<commit>+<digest>`); outside a checkout, the
    installed package's version."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        changes = subprocess.run(
            ["git", "diff", "HEAD", "--", ":/ecopipe", ":/conf", ":/pyproject.toml"],
            cwd=here, capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    if commit is None or commit.returncode != 0 or not commit.stdout.strip():
        return f"ecopipe {importlib.metadata.version('ecopipe')}"
    dirty = f"+{hashlib.sha256(changes.stdout).hexdigest()[:8]}" if changes.stdout else ""
    return commit.stdout.strip()[:12] + dirty


def measured_by(run: Run) -> str:
    """The code version that measured a run ('unknown' for a run that logged none)."""
    tags = run.data.tags
    return tags.get(Tag.CODE_VERSION) or (tags.get(Tag.OLD_COMMIT, "")[:12] or "unknown")


def finished_run_with_hash(client: MlflowClient, experiment: str, digest: str, hardware: str) -> Run | None:
    """A FINISHED job run with this config hash on this hardware that this reader can vouch for, if
    any: the job is done. One this code version measured comes first.

    The hardware is part of the key: the same sweep run by a second machine against a shared store
    measures its own column instead of skipping everything. Anyone who may write to the experiment
    could plant a run with the same hash, so only this user's runs, started no later than now, count.
    The hash is hexadecimal and the hardware name is compared here, so no value is formatted into the
    search (a name with a quote broke it).
    """
    assert re.fullmatch(r"[0-9a-f]+", digest), digest
    candidates = search_all(  # every page: runs planted by the thousand must not push this user's out
        client, [experiment], f"tags.`{Tag.CONFIG_HASH}` = '{digest}' and attributes.status = 'FINISHED'"
    )
    candidates.sort(key=lambda run: run.info.start_time or 0, reverse=True)
    mine = [r for r in candidates if r.data.tags.get(Tag.HARDWARE_DETECTED) == hardware and vouched(r)]
    same_code = [r for r in mine if measured_by(r) == code_version()]
    return (same_code or mine or [None])[0]


def link_reused_run(client: MlflowClient, run: Run, name: str) -> None:
    """A sweep job skipped as already measured: list its earlier run on the sweep's parent run, so the
    sweep's tables hold every point of its grid and say which were reused, and by which code."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        client.set_tag(parent, TagFamily.REUSED.of(run.info.run_id), name)
        if measured_by(run) != code_version():
            client.set_tag(parent, TagFamily.REUSED_OTHER_CODE.of(run.info.run_id), measured_by(run))


def reused_runs(client: MlflowClient, parent_id: str) -> dict[str, str]:
    """The earlier runs a sweep reused: run id -> job name."""
    return _tagged(client.get_run(parent_id).data.tags, TagFamily.REUSED)


def reused_from_other_code(client: MlflowClient, parent_id: str) -> dict[str, str]:
    """The reused runs another code version measured: run id -> that version."""
    return _tagged(client.get_run(parent_id).data.tags, TagFamily.REUSED_OTHER_CODE)


def _tagged(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}
