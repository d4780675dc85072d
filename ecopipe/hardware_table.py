"""The hardware table (ecopipe/data/hardware.csv): its rows by config key, and the row a device name denotes.

A profile carries a device's sourced TDP, memory, embodied emissions and tier; a detected device string
("NVIDIA A100-SXM4-40GB", a CPU's model name) is matched to the one row it names, or to none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from ecopipe.reference import table, year_of

__all__ = ["HardwareProfile", "hardware_profiles", "match_hardware"]


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    kind: str  # "gpu" | "cpu" | "soc"
    tier: str
    tdp_w: float | None
    memory_gb: float | None
    embodied_kgco2e: float | None
    source: str
    year: int | None
    memory_bandwidth_gb_s: float | None = None
    threads_per_package: int | None = None  # CPUs: hardware threads of one package (TDP is per package)


def _num(cell: str) -> float | None:
    return float(cell) if cell else None


def _int(cell: str) -> int | None:
    return int(float(cell)) if cell else None


# hardware.csv name -> (config key, tokens a device string must contain to match this row).
# The plain key ("h100", "a100", "v100", "jetson_orin") is the most common variant: SXM, 80 GB, AGX 64 GB.
_HW_KEYS: dict[str, tuple[str, str]] = {
    "NVIDIA H200 SXM 141GB": ("h200", "h200"),
    "NVIDIA H200 NVL 141GB": ("h200_nvl", "h200 nvl"),
    "NVIDIA H100 SXM 80GB": ("h100", "h100"),
    "NVIDIA H100 PCIe 80GB": ("h100_pcie", "h100 pcie"),
    "NVIDIA H100 NVL 94GB": ("h100_nvl", "h100 nvl"),
    "NVIDIA A100 SXM4 80GB": ("a100", "a100"),
    "NVIDIA A100 SXM4 40GB": ("a100_40gb", "a100 40gb"),
    "NVIDIA A100 PCIe 80GB": ("a100_pcie", "a100 pcie"),
    "NVIDIA A100 PCIe 40GB": ("a100_pcie_40gb", "a100 pcie 40gb"),
    "NVIDIA L4": ("l4", "l4"),
    "NVIDIA T4": ("t4", "t4"),
    "NVIDIA Tesla V100 SXM2 32GB": ("v100", "v100"),
    "NVIDIA Tesla V100 PCIe 16GB": ("v100_pcie", "v100 pcie"),
    "NVIDIA L40S 48GB": ("l40s", "l40s"),
    "NVIDIA A10G": ("a10g", "a10g"),
    "NVIDIA A40": ("a40", "a40"),
    "NVIDIA H800 SXM 80GB": ("h800", "h800"),
    "NVIDIA GH200 480GB": ("gh200", "gh200"),
    "NVIDIA RTX A6000": ("rtx_a6000", "rtx a6000"),
    "NVIDIA GeForce RTX 4090": ("rtx4090", "rtx 4090"),
    "NVIDIA GeForce RTX 3090": ("rtx3090", "rtx 3090"),
    "NVIDIA GeForce GTX 1650": ("gtx1650", "gtx 1650"),
    "NVIDIA Jetson AGX Orin 64GB": ("jetson_orin", "agx orin"),
    "NVIDIA Jetson AGX Orin 32GB": ("jetson_orin_32gb", "agx orin 32gb"),
    "NVIDIA Jetson Orin Nano 8GB (Super, JetPack 6.1+)": ("jetson_orin_nano", "orin nano"),
    "Intel Xeon Platinum 8480+": ("xeon_8480", "xeon 8480"),
    "Intel Xeon Platinum 8380": ("xeon_8380", "xeon 8380"),
    "AMD EPYC 9654": ("epyc_9654", "epyc 9654"),
    "AMD EPYC 7763": ("epyc_7763", "epyc 7763"),
    "Intel Core i9-13900K": ("i9_13900k", "13900k"),
    "AMD Ryzen 9 7950X": ("ryzen_7950x", "ryzen 7950x"),
    "AMD Ryzen 7 5800X": ("ryzen_5800x", "ryzen 5800x"),
    "Apple M1": ("apple_m1", "apple m1"),
    "Apple M2": ("apple_m2", "apple m2"),
    "Apple M2 Max": ("apple_m2_max", "apple m2 max"),
    "Apple M3": ("apple_m3", "apple m3"),
    "Apple M3 Max": ("apple_m3_max", "apple m3 max"),
    "Apple M4": ("apple_m4", "apple m4"),
    "Apple M4 Max": ("apple_m4_max", "apple m4 max"),
}

# Tokens that pick a different product: a device string carrying one only matches a row that has it too.
_VARIANT_TOKENS = frozenset(
    {"pcie", "nvl", "sxm", "ti", "super", "max", "pro", "ultra", "nano", "nx", "agx", "laptop", "mobile"}
)


def _tokens(text: str) -> set[str]:
    """Lower-case alphanumeric words; "SXM2/SXM4/SXM5" -> "sxm" ("A100-SXM4-40GB" -> a100, sxm, 40gb)."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("(r)", " ").replace("(tm)", " "))
    return {"sxm" if re.fullmatch(r"sxm\d", w) else w for w in words}


def _is_variant(token: str) -> bool:
    return token in _VARIANT_TOKENS or re.fullmatch(r"\d+gb", token) is not None


def _hw_key(name: str) -> str:
    return _HW_KEYS[name][0] if name in _HW_KEYS else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@cache  # = functools.lru_cache(maxsize=None)
def hardware_profiles() -> dict[str, HardwareProfile]:
    """Rows of hardware.csv keyed by config key (``conf/hardware/<key>.yaml``'s ``profile``).

    Keys are listed in ``_HW_KEYS``: the bare model for the common variant ("h100" = H100 SXM 80GB,
    "a100" = A100 SXM4 80GB, "v100" = V100 SXM2 32GB, "h200" = H200 SXM, "jetson_orin" = AGX Orin 64GB),
    a suffix for the others ("h100_pcie", "a100_40gb", "a100_pcie_40gb", "jetson_orin_nano"), and
    family_model for CPUs and Apple chips ("xeon_8480", "epyc_9654", "i9_13900k", "apple_m2_max").
    A row missing from ``_HW_KEYS`` gets its name slugified.
    """
    out: dict[str, HardwareProfile] = {}
    for r in table("hardware"):
        profile = HardwareProfile(
            name=r["name"],
            kind=r["kind"],
            tier=r["tier"],
            tdp_w=_num(r["tdp_w"]),
            memory_gb=_num(r["memory_gb"]),
            embodied_kgco2e=_num(r["embodied_kgco2e"]),
            source=r["source"],
            year=year_of(r["year"]),
            memory_bandwidth_gb_s=_num(r["memory_bandwidth_gb_s"]),
            threads_per_package=_int(r["threads_per_package"]),
        )
        out[_hw_key(r["name"])] = profile
    return out


def match_hardware(model_string: str) -> HardwareProfile | None:
    """The table row a detected device name denotes, or None when no single row matches confidently.

    A row matches when the string holds all of the row's required tokens (whole words, so "L40" is not
    "L4" or "L40S") and every variant token the string holds (PCIe, NVL, Max, Ti, a memory size, ...) is
    in the row's name. Among matches the most specific row (most required tokens) wins; a tie is None.
    """
    words = _tokens(model_string)
    candidates: list[tuple[int, HardwareProfile]] = []
    for profile in hardware_profiles().values():
        required = _tokens(_HW_KEYS.get(profile.name, ("", profile.name))[1])
        allowed = _tokens(profile.name) | required
        if required <= words and all(w in allowed for w in words if _is_variant(w)):
            candidates.append((len(required), profile))
    candidates.sort(key=lambda c: -c[0])
    if not candidates or (len(candidates) > 1 and candidates[0][0] == candidates[1][0]):
        return None
    return candidates[0][1]
