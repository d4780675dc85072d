"""Whether the Hugging Face hub can serve this process, checked once before any hub library loads.

Offline, `huggingface_hub` retries each request for tens of seconds, and a sweep of hundreds of
pretrained jobs would spend hours failing. So the hub is probed once (a sweep's callback does it
before its first job; a lone job before it loads a model or data set), the verdict is exported to
the environment that jobs and their worker processes inherit, and an unreachable hub switches the
hub libraries to offline mode (HF_HUB_OFFLINE=1, read when they are imported): cached models and
data sets still load, anything else is refused at once, with one line naming the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from ecopipe.config import Config, DataSource, Framework, Weights

# Set by the first probe: empty when the hub answered, else why it cannot be reached.
HUB_ENV = "ECOPIPE_HUB_UNREACHABLE"
PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def _offline_by_setting() -> bool:
    return any(os.environ.get(key, "").lower() in _TRUE for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe(endpoint: str) -> str:
    try:
        answer = requests.head(endpoint, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as error:
        return f"{endpoint} did not answer within {PROBE_TIMEOUT_S:g} s ({type(error).__name__})"
    return f"{endpoint} answered HTTP {answer.status_code}" if answer.status_code >= 500 else ""


def hub_unreachable() -> str | None:
    """Why the hub cannot serve this process, or None when it can; probes at most once per sweep."""
    if os.environ.get(HUB_ENV):
        return os.environ[HUB_ENV]
    if _offline_by_setting():
        return "HF_HUB_OFFLINE=1 is set"
    if HUB_ENV in os.environ:  # probed: reachable
        return None
    reason = _probe(os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/"))
    os.environ[HUB_ENV] = reason
    if reason:
        os.environ["HF_HUB_OFFLINE"] = "1"  # cached files only, from here on and in worker processes
    return reason or None


def _remote(hf_id: str | None) -> bool:
    return bool(hf_id) and not Path(str(hf_id)).expanduser().is_dir()


def needs_hub(cfg: Config) -> bool:
    """Whether the job reads a model or data set by hub id rather than from a local directory."""
    if cfg.strategy.selects:
        return cfg.pool.dataset == "fashion_mnist"
    model = cfg.model
    pretrained = model.framework is Framework.transformers and model.weights is Weights.pretrained
    hub_data = cfg.dataset.source is DataSource.huggingface
    return (pretrained and _remote(model.hf_id)) or (hub_data and _remote(cfg.dataset.hf_id))


def describe_offline(reason: str | None) -> str:
    """The clause a refusal gives for the hub not serving a file."""
    if reason is None:
        return "the hub could not serve it"
    if reason.startswith("HF_HUB_OFFLINE"):
        return f"{reason}, so only cached files load"
    return f"the hub is unreachable ({reason}; checked once), so only cached files load"
