"""What /proc/cpuinfo says of a CPU: its first processor block, or a CPU known only by its name.

The fields that identify a microarchitecture (ecopipe.cpu_identity): vendor, family/model/stepping,
instruction-set flags and model name on x86; implementer/part and features on Arm.
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

__all__ = ["CpuInfo", "int_or_none", "named_cpu", "parse_cpuinfo", "read_cpuinfo"]


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    vendor_id: str  # "GenuineIntel", "AuthenticAMD", "" ; Arm: "" (use implementer)
    family: int | None  # "cpu family"
    model: int | None  # "model" (decimal in cpuinfo)
    stepping: int | None
    flags: frozenset[str]  # x86 "flags" / arm "Features"
    model_name: str  # "model name" (may be generic: "AMD EPYC", "Intel(R) Xeon(R) Processor")
    implementer: int | None  # arm "CPU implementer" (0x41 = Arm Ltd)
    part: int | None  # arm "CPU part"


def int_or_none(text: str | None, base: int = 10) -> int | None:
    """`text` as an integer in `base` (0: as a literal reads, "0x41" too); None when absent or not one."""
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        return None


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor block of a /proc/cpuinfo text (x86 or Arm); absent fields are None/empty."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags", fields.get("features", ""))
    return CpuInfo(
        vendor_id=fields.get("vendor_id", ""),
        family=int_or_none(fields.get("cpu family")),
        model=int_or_none(fields.get("model")),
        stepping=int_or_none(fields.get("stepping")),
        flags=frozenset(flags.split()),
        model_name=fields.get("model name", ""),
        implementer=int_or_none(fields.get("cpu implementer"), 0),
        part=int_or_none(fields.get("cpu part"), 0),
    )


# Brand words of a CPU named by hand (hardware.cpu_model): the vendor its identification starts from.
_BRAND_WORDS = {
    "intel": "GenuineIntel",
    "xeon": "GenuineIntel",
    "amd": "AuthenticAMD",
    "epyc": "AuthenticAMD",
    "ryzen": "AuthenticAMD",
}
_ARM_WORDS = ("ampere", "altra", "graviton", "neoverse", "arm")
ARM_LTD = 0x41  # "CPU implementer" of Arm Ltd's own cores (Neoverse), as Graviton and Altra report


def named_cpu(model_name: str) -> CpuInfo:
    """A CPU known only by its name (a what-if estimate): the vendor its brand words imply, no ids or
    flags, so that identification goes by the SKU in the name or gives the vendor's range."""
    words = model_name.lower()
    vendor = next((v for k, v in _BRAND_WORDS.items() if k in words), "")
    arm = not vendor and any(w in words for w in _ARM_WORDS)
    return CpuInfo(vendor, None, None, None, frozenset(), model_name, ARM_LTD if arm else None, None)


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """parse_cpuinfo of the file; an unreadable one gives empty fields and the platform's processor name."""
    try:
        return parse_cpuinfo(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        name = platform.processor() or platform.machine()
        return CpuInfo("", None, None, None, frozenset(), name, None, None)
