"""The hardware profile of the job's device: GPUs from review, an unknown GPU, a named CPU."""

from __future__ import annotations

import logging

import pytest

from ecopipe.config import HardwareConfig
from ecopipe.hardware import device_profile
from tests.fakes import EPYC_7763


@pytest.mark.parametrize(
    ("cuda_name", "key", "tier", "tdp", "bandwidth"),
    [
        ("NVIDIA A10G", "a10g", "datacenter", 300.0, 600.0),
        ("NVIDIA A40", "a40", "datacenter", 300.0, 696.0),
        ("NVIDIA L40S", "l40s", "datacenter", 350.0, 864.0),
        ("NVIDIA H800", "h800", "datacenter", 700.0, 3350.0),
        ("NVIDIA GH200 480GB", "gh200", "datacenter", 1000.0, 4000.0),
        ("NVIDIA RTX A6000", "rtx_a6000", "desktop", 300.0, 768.0),
    ],
)
def test_gpus_from_review_have_rows(monkeypatch, cuda_name, key, tier, tdp, bandwidth):
    from ecopipe import hardware
    from ecopipe.hardware_table import hardware_profiles

    monkeypatch.setattr(hardware, "gpu_model_name", lambda index: cuda_name)  # no GPU on this machine
    profile = device_profile(HardwareConfig(), "cuda:0")
    assert (profile.key, profile.tier, profile.tdp_w) == (key, tier, tdp)
    assert hardware_profiles()[key].memory_bandwidth_gb_s == bandwidth


def test_unknown_cuda_device_defaults_to_datacenter(monkeypatch, caplog):
    from ecopipe import hardware

    monkeypatch.setattr(hardware, "gpu_model_name", lambda index: "NVIDIA B300 SXM6 AC")
    with caplog.at_level(logging.WARNING):
        profile = device_profile(HardwareConfig(), "cuda:0")
    assert (profile.key, profile.tier, profile.tier_assumed) == ("unknown", "datacenter", True)
    assert "CUDA device 'NVIDIA B300 SXM6 AC' is not in the hardware table" in caplog.text
    # A tier the user set is theirs, not an assumption: the summary then says nothing about it.
    chosen = device_profile(HardwareConfig(tier="desktop"), "cuda:0")
    assert (chosen.tier, chosen.tier_assumed) == (
        "desktop",
        False,
    ) and "set by hardware.tier" in chosen.source


def test_cpu_model_override_picks_the_profile():
    profile = device_profile(HardwareConfig(cpu_model=EPYC_7763), "cpu")
    assert (profile.key, profile.tdp_w, profile.detected_name) == ("epyc_7763", 280.0, EPYC_7763)
