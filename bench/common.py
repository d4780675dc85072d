"""Shared by the benchmarks: composing a job's config, the machine's description, writing result tables."""

from __future__ import annotations

import datetime
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import psutil
from hydra import compose, initialize_config_dir

from ecopipe.config import CONFIG_DIR, Config, register_configs
from ecopipe.hardware import cpu_model_name, cuda_available

RESULTS = Path(__file__).resolve().parent / "results"
register_configs()


def job_config(*overrides: str) -> Config:
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))  # type: ignore[return-value]


def machine() -> str:
    gpu = ""
    if cuda_available():
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    cores = f"{psutil.cpu_count()} logical cores"
    return f"{cpu_model_name()}, {cores}, {memory}{gpu}; Python {platform.python_version()}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_table(
    name: str, title: str, frame: pd.DataFrame, notes: Sequence[str] = (), header: Sequence[str] = ()
) -> str:
    """Write bench/results/<name>.md with the date, the machine and command, and return its text.

    `header`: lines after the machine's (versions, repeats); `notes`: paragraphs after the table."""
    from ecopipe.aggregation.render import markdown

    command = f"make bench (python -m bench {name})"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            f"## {title}",
            "",
            f"Date: {date}  ",
            f"Machine: {machine()}  ",
            *(f"{line}  " for line in header),
            f"Command: `{command}`",
            "",
            markdown(frame),
            "",
            *(line for note in notes for line in (note, "")),
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text
