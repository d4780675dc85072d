"""The hardware table's profiles: one key a row, their values, conf/hardware's profiles, name matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ecopipe.hardware_table import hardware_profiles, match_hardware
from tests.reference.conftest import rows


def test_hardware_keys_one_per_row() -> None:
    profiles = hardware_profiles()
    assert len(profiles) == len(rows("hardware")) == 39
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in profiles)
    assert {
        "h100": "NVIDIA H100 SXM 80GB",
        "h100_pcie": "NVIDIA H100 PCIe 80GB",
        "h200": "NVIDIA H200 SXM 141GB",
        "a100": "NVIDIA A100 SXM4 80GB",
        "a100_40gb": "NVIDIA A100 SXM4 40GB",
        "a100_pcie": "NVIDIA A100 PCIe 80GB",
        "l4": "NVIDIA L4",
        "t4": "NVIDIA T4",
        "v100": "NVIDIA Tesla V100 SXM2 32GB",
        "l40s": "NVIDIA L40S 48GB",
        "rtx4090": "NVIDIA GeForce RTX 4090",
        "rtx3090": "NVIDIA GeForce RTX 3090",
        "gtx1650": "NVIDIA GeForce GTX 1650",
        "jetson_orin": "NVIDIA Jetson AGX Orin 64GB",
        "xeon_8480": "Intel Xeon Platinum 8480+",
        "epyc_9654": "AMD EPYC 9654",
        "i9_13900k": "Intel Core i9-13900K",
        "ryzen_7950x": "AMD Ryzen 9 7950X",
        "apple_m2": "Apple M2",
    }.items() <= {k: p.name for k, p in profiles.items()}.items()


def test_hardware_values() -> None:
    h100 = hardware_profiles()["h100"]
    assert (h100.kind, h100.tier, h100.tdp_w, h100.memory_gb, h100.embodied_kgco2e, h100.year) == (
        "gpu",
        "datacenter",
        700.0,
        80.0,
        575.1,
        2022,
    )
    m2 = hardware_profiles()["apple_m2"]
    assert (m2.kind, m2.tier, m2.tdp_w, m2.year) == ("soc", "mobile", None, None)  # blank stays blank


def test_conf_hardware_profiles_exist() -> None:
    conf = Path(__file__).resolve().parents[2] / "conf" / "hardware"
    if not conf.is_dir():
        pytest.skip("no conf/ next to tests/")
    for path in conf.glob("*.yaml"):
        m = re.search(r"^profile:\s*(\S+)", path.read_text(), re.M)
        if m and m.group(1) != "null":
            assert m.group(1) in hardware_profiles(), path.name


@pytest.mark.parametrize(
    ("detected", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM 80GB"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe 80GB"),
        ("Tesla T4", "NVIDIA T4"),
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 SXM4 40GB"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB"),
        ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 PCIe 40GB"),
        ("Tesla V100-SXM2-32GB", "NVIDIA Tesla V100 SXM2 32GB"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("NVIDIA L40S", "NVIDIA L40S 48GB"),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654"),
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K"),
        ("Apple M2 Max", "Apple M2 Max"),
        ("Intel(R) Xeon(R) Processor", None),
        ("NVIDIA L40", None),  # neither the L4 nor the L40S
        ("Tesla V100-SXM2-16GB", None),  # no 16 GB SXM2 row
        ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
        ("AMD Ryzen 9 7950X3D 16-Core Processor", None),
        ("Apple M2 Pro", None),
        ("", None),
    ],
)
def test_match_hardware(detected: str, expected: str | None) -> None:
    found = match_hardware(detected)
    assert (found.name if found else None) == expected
