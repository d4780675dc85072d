"""Inference efficiency of the measured stage on a GPU: opt-1.3b generation at batch 1, 8 and 64.

Tokens per second and joules per token come from real jobs (NVML energy), beside the memory-bandwidth
bound at batch 1: each generated token reads every weight once, so tokens/s <= bandwidth / weight bytes.
"""

from __future__ import annotations

import tempfile

import pandas as pd
from hydra import compose, initialize_config_dir

from ecopipe.config import CONFIG_DIR
from ecopipe.hardware import cuda_available
from ecopipe.job import run_job

# HBM bandwidth in bytes/s from NVIDIA's datasheets (H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s,
# H200 4.8 TB/s, A100 80GB SXM 2.039 TB/s): matched on the device name.
BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H200": 4.8e12, "A100-SXM4-80GB": 2.039e12}


def rated_bandwidth(device_name: str) -> float | None:
    """The datasheet's HBM bandwidth of a CUDA device name, bytes/s; None for a card not listed."""
    return next((v for k, v in BANDWIDTH.items() if k in device_name), None)


def run() -> pd.DataFrame:
    if not cuda_available():
        return pd.DataFrame()
    import torch

    bandwidth = rated_bandwidth(torch.cuda.get_device_name(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for batch in (1, 8, 64):
            cfg = compose(
                "config",
                overrides=[
                    "model=opt-1.3b",
                    "model.weights=random",
                    "precision=fp16",
                    "dataset=synthetic_text",
                    f"dataset.limit={max(batch, 8)}",
                    f"batch_size={batch}",
                    "model.max_new_tokens=64",
                    "hardware.device=cuda",
                    f"tracking.uri=sqlite:///{tmp}/gpu.db",
                ],
            )
            m = run_job(cfg).metrics
            tokens_per_s = m["tokens"] / m["window_s"]
            bound = bandwidth / (m["parameters"] * 2) if bandwidth and batch == 1 else None
            rows.append(
                {
                    "batch": batch,
                    "tokens/s": tokens_per_s,
                    "J/token": m["energy_per_1k_tokens_gross_j"] / 1000,
                    "bandwidth bound tokens/s (batch 1)": bound,
                    "fraction of bound": tokens_per_s / bound if bound else None,
                }
            )
    return pd.DataFrame(rows)
