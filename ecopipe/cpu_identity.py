"""Which CPU microarchitecture this is, read from /proc/cpuinfo (ecopipe.cpuinfo) through a sourced table.

Without energy counters ecopipe estimates CPU power from SPECpower coefficients per microarchitecture
(ecopipe.cpu_coefficients); this module names the microarchitecture, through a sourced table
(ecopipe/data/cpu_microarch.csv): the model name when it names a SKU of Cloud Carbon Footprint's family
lists, else vendor/family/model (/stepping), else Arm implementer/part; then checked against the
instruction-set flags, which a hypervisor may hide but never invents.

Microarchitecture keys are lower-case snake case ("cascade_lake", "zen3", "neoverse_n1"). A key ending in
"+" is a set that the flags only narrow to "that or later": "sapphire_rapids+" means Sapphire Rapids or
a later server generation having all of its flags (Emerald Rapids, Granite Rapids).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import re
from importlib.resources import files

from ecopipe.cpuinfo import CpuInfo, int_or_none

__all__ = [
    "CpuIdentity",
    "identify",
    "known_microarchs",
    "coefficient_rows",
    "plus_members",
    "set_words",
]

VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}

# Instruction-set flags (as /proc/cpuinfo spells them, arch/x86/include/asm/cpufeatures.h) that tell
# generations apart, and which of them each microarchitecture has. Sources: GCC's
# gcc/config/i386/i386.h PTA_* sets (Haswell AVX2; Skylake-AVX512 AVX512F, CLWB; Cascade Lake +VNNI;
# Cooper Lake +BF16; Ice Lake/Rocket Lake/Tiger Lake VNNI without BF16; Sapphire Rapids AMX-TILE/INT8/BF16,
# AVX-VNNI, AVX512-BF16; Alder Lake AVX-VNNI; Zen 2 +CLWB; Zen 3 +VAES; Zen 4 +AVX512F/BF16/VNNI), LLVM's
# CPU models (znver5 +AVX-VNNI; sierraforest AVX-VNNI without AVX-512), Intel's ISA extensions reference
# (AMX-FP16 from Granite Rapids). Alder/Raptor Lake: their P-cores' AVX-512 was exposed by early firmware,
# so those flags do not contradict them. None: not known, never contradicted.
_AVX512 = {"avx2", "avx512f"}
_SPR = _AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
_ZEN3 = {"avx2", "clwb", "vaes"}
_ZEN4 = _ZEN3 | {"avx512f", "avx512_vnni", "avx512_bf16"}
FLAGS_OF: dict[str, frozenset[str] | None] = {
    key: None if flags is None else frozenset(flags)
    for key, flags in {
        "sandy_bridge": set(),
        "ivy_bridge": set(),
        "haswell": {"avx2"},
        "broadwell": {"avx2"},
        "skylake_sp": _AVX512,
        "cascade_lake": _AVX512 | {"avx512_vnni"},
        "cooper_lake": _AVX512 | {"avx512_vnni", "avx512_bf16"},
        "ice_lake": _AVX512 | {"avx512_vnni"},
        "sapphire_rapids": _SPR,
        "emerald_rapids": _SPR,
        "granite_rapids": _SPR | {"amx_fp16"},
        "sierra_forest": {"avx2", "avx_vnni"},
        "clearwater_forest": None,
        "diamond_rapids": None,
        "skylake_client": {"avx2"},
        "kaby_lake": {"avx2"},
        "coffee_lake": {"avx2"},
        "comet_lake": {"avx2"},
        "cannon_lake": _AVX512,
        "tiger_lake": _AVX512 | {"avx512_vnni"},
        "rocket_lake": _AVX512 | {"avx512_vnni"},
        "alder_lake": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni"},
        "raptor_lake": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni"},
        "meteor_lake": {"avx2", "avx_vnni"},
        "arrow_lake": {"avx2", "avx_vnni"},
        "lunar_lake": {"avx2", "avx_vnni"},
        "panther_lake": {"avx2", "avx_vnni"},
        "zen1": {"avx2"},
        "zen2": {"avx2", "clwb"},
        "zen3": _ZEN3,
        "zen4": _ZEN4,
        "zen5": _ZEN4 | {"avx_vnni"},
        "zen1_client": {"avx2"},
        "zen2_client": {"avx2", "clwb"},
        "zen3_client": _ZEN3,
        "zen4_client": _ZEN4,
        "zen5_client": _ZEN4 | {"avx_vnni"},
    }.items()
}
MARKERS = {
    "intel": frozenset().union(*(FLAGS_OF[k] or () for k in FLAGS_OF if not k.startswith("zen"))),
    "amd": frozenset().union(*(FLAGS_OF[k] or () for k in FLAGS_OF if k.startswith("zen"))),
}
# Generations in order, per vendor and segment. "<key>+" = this key and the later ones of its lineage
# that have all of its flags.
LINEAGES: dict[str, dict[str, list[str]]] = {
    "intel": {
        "server": [
            "sandy_bridge",
            "ivy_bridge",
            "haswell",
            "broadwell",
            "skylake_sp",
            "cascade_lake",
            "cooper_lake",
            "ice_lake",
            "sapphire_rapids",
            "emerald_rapids",
            "granite_rapids",
            "sierra_forest",
        ],
        "client": [
            "skylake_client",
            "kaby_lake",
            "coffee_lake",
            "comet_lake",
            "cannon_lake",
            "tiger_lake",
            "rocket_lake",
            "alder_lake",
            "raptor_lake",
            "meteor_lake",
            "arrow_lake",
            "lunar_lake",
            "panther_lake",
        ],
    },
    "amd": {
        "server": ["zen1", "zen2", "zen3", "zen4", "zen5"],
        "client": ["zen1_client", "zen2_client", "zen3_client", "zen4_client", "zen5_client"],
    },
}


# --- tables -----------------------------------------------------------------------------------------


def _read_csv(name: str) -> list[dict[str, str]]:
    text = files("ecopipe.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@dataclasses.dataclass(frozen=True)
class _Row:
    match: str
    vendor: str
    family: int | None
    model_min: int | None
    model_max: int | None
    stepping_min: int | None
    stepping_max: int | None
    implementer: int | None
    part: int | None
    sku: str
    microarch: str
    segment: str
    name: str
    source: str


@functools.cache
def _table() -> tuple[_Row, ...]:
    return tuple(
        _Row(
            match=r["match"],
            vendor=r["vendor"],
            family=int_or_none(r["family"] or None, 0),
            model_min=int_or_none(r["model_min"] or None, 0),
            model_max=int_or_none(r["model_max"] or None, 0),
            stepping_min=int_or_none(r["stepping_min"] or None, 0),
            stepping_max=int_or_none(r["stepping_max"] or None, 0),
            implementer=int_or_none(r["implementer"] or None, 0),
            part=int_or_none(r["part"] or None, 0),
            sku=r["sku"],
            microarch=r["microarch"],
            segment=r["segment"],
            name=r["name"],
            source=r["source"],
        )
        for r in _read_csv("cpu_microarch.csv")
    )


@functools.cache
def coefficient_rows() -> dict[str, dict[str, str]]:
    return {row["microarch"]: row for row in _read_csv("cpu_power_specpower.csv")}


@functools.cache
def _sku_patterns(vendor: str) -> tuple[tuple[re.Pattern[str], _Row], ...]:
    rows = [row for row in _table() if row.match == "sku" and row.vendor == vendor]
    rows.sort(key=lambda row: len(row.sku), reverse=True)  # the longest SKU that matches wins
    return tuple(
        (re.compile(rf"(?<![\w-]){re.escape(row.sku)}(?![\w-])", re.IGNORECASE), row) for row in rows
    )


def _key_name(key: str) -> str:
    """'Rocket Lake' for 'rocket_lake': the display name the identification table gives the key."""
    return _microarch_names().get(key, key)


@functools.cache
def _microarch_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for row in _read_csv("cpu_microarch.csv"):
        names.setdefault(row["microarch"], row["microarch_name"])
    return names


def _segment(key: str) -> str:
    return coefficient_rows()[key]["segment"]


def plus_members(key: str) -> list[str]:
    """The keys of the set "<key>+": key and the later keys of its lineage having all of key's flags."""
    own = FLAGS_OF.get(key)
    for lineages in LINEAGES.values():
        for lineage in lineages.values():
            if key in lineage and own is not None:
                later = lineage[lineage.index(key) :]
                return [k for k in later if FLAGS_OF.get(k) is not None and own <= FLAGS_OF[k]]
    return []


@functools.cache
def known_microarchs() -> list[str]:
    """The allowed values of hardware.cpu_microarch: every key, and "<key>+" where that set has 2+ keys."""
    keys = [key for key in coefficient_rows() if not key.startswith("range:")]
    plus = [f"{key}+" for key in keys if len(plus_members(key)) > 1]
    return sorted(keys) + sorted(plus)


# --- identification ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CpuIdentity:
    vendor: str  # "intel" | "amd" | "arm" | "unknown"
    microarch: str | None  # a key of known_microarchs(), "<key>+" for "that or later"; None if unknown
    how: str  # "user" | "name" | "table" | "flags" | "unknown"
    note: str  # one line a reader understands: what was read and why this answer


def _vendor(info: CpuInfo) -> str:
    if info.vendor_id in VENDORS:
        return VENDORS[info.vendor_id]
    if not info.vendor_id and info.implementer is not None:
        return "arm"
    return "unknown"


def _ids(info: CpuInfo) -> str:
    if info.implementer is not None:
        part = "?" if info.part is None else f"0x{info.part:03x}"
        return f"Arm implementer 0x{info.implementer:02x} part {part}"
    family = "?" if info.family is None else f"{info.family} (0x{info.family:x})"
    model = "?" if info.model is None else f"{info.model} (0x{info.model:X})"
    stepping = "" if info.stepping is None else f" stepping {info.stepping}"
    return f"{info.vendor_id or 'no vendor_id'} family {family} model {model}{stepping}"


def _normalise_name(name: str) -> str:
    name = re.sub(r"\((?:R|TM|tm)\)|[®™]", " ", name)
    name = re.sub(r"@\s*[\d.]+\s*[GM]Hz", " ", name, flags=re.IGNORECASE)
    return " ".join(name.split())


def _by_name(info: CpuInfo, vendor: str) -> _Row | None:
    name = _normalise_name(info.model_name)
    if not name:
        return None
    for pattern, row in _sku_patterns(vendor):
        if pattern.search(name):
            return row
    return None


def _by_table(info: CpuInfo, vendor: str) -> _Row | None:
    for row in _table():
        if row.vendor != vendor:
            continue
        if row.match == "arm":
            if row.implementer == info.implementer and row.part == info.part:
                return row
        elif row.match == "cpuid" and info.family == row.family and info.model is not None:
            if not (row.model_min <= info.model <= row.model_max):
                continue
            stepping = info.stepping
            if row.stepping_min is not None and (
                stepping is None or not row.stepping_min <= stepping <= row.stepping_max
            ):
                continue
            return row
    return None


def _flag_candidates(vendor: str, info: CpuInfo, present: frozenset[str], segment: str) -> list[str]:
    """Keys of the vendor having every flag present: the same segment's lineage first, then the other."""
    families = {
        key: {row.family for row in _table() if row.microarch == key and row.match == "cpuid"}
        for key in FLAGS_OF
    }
    lineages = LINEAGES[vendor]
    for seg in (segment, "client" if segment == "server" else "server"):
        found = [
            key
            for key in lineages[seg]
            if FLAGS_OF[key] is not None
            and present <= FLAGS_OF[key]
            and (info.family is None or info.family in families[key])
        ]
        if found:
            return found
    return []


def _shares_id(key: str, info: CpuInfo) -> bool:
    return any(
        row.microarch == key
        and row.match == "cpuid"
        and row.family == info.family
        and info.model is not None
        and row.model_min <= info.model <= row.model_max
        for row in _table()
    )


def set_words(key: str) -> str:
    """'Sapphire Rapids or later (sapphire_rapids, emerald_rapids, granite_rapids)'."""
    if key.endswith("+"):
        members = plus_members(key[:-1])
        return f"{_key_name(key[:-1])} or later ({', '.join(members)})"
    return f"{_key_name(key)} ({key})"


def _check_flags(info: CpuInfo, vendor: str, key: str, reason: str, how: str) -> CpuIdentity:
    """The answer `key`, unless flags it cannot have are present: then the flags decide (how="flags")."""
    supported = FLAGS_OF.get(key)
    markers = MARKERS.get(vendor)
    present = info.flags & markers if markers is not None else frozenset()
    beyond = sorted(present - supported) if supported is not None else []
    if not beyond:
        return CpuIdentity(vendor, key, how, f"{reason}: {_key_name(key)} ({key})")
    name, segment = _key_name(key), _segment(key)
    what = f"{reason}, but the flags {' '.join(beyond)} are beyond {name}"
    candidates = _flag_candidates(vendor, info, present, segment)
    if not candidates:
        note = f"{what}, and no {vendor} generation in the table has all of {' '.join(sorted(present))}"
        return CpuIdentity(vendor, None, "unknown", note)
    same_id = [k for k in candidates if _shares_id(k, info)]
    first = candidates[0]
    answer = first if len(candidates) == 1 else f"{first}+"
    other = _segment(first)
    if same_id:
        # Generations sharing this family/model id (model 85: Skylake-SP, Cascade Lake, Cooper Lake):
        # the earliest one with all these flags; a later one would show more flags.
        answer = first = same_id[0]
        why = f"of the generations with this id, {_key_name(first)} is the first with all of them"
    elif other != segment:
        alien = [f for f in beyond if not any(f in (FLAGS_OF[k] or ()) for k in LINEAGES[vendor][segment])]
        why = (
            f"{' '.join(alien)} exist in no {segment} generation, "
            f"only in {other} ones from {_key_name(first)} on"
        )
    else:
        why = f"{_key_name(first)} is the first {segment} generation with all of them"
    note = f"{what}; {why}; the flags win: {set_words(answer)}"
    return CpuIdentity(vendor, answer, "flags", note)


def identify(info: CpuInfo, override: str | None = None) -> CpuIdentity:
    """The microarchitecture of `info`: the user's key, else the model name, the id table, the flags.

    Order: `override` (hardware.cpu_microarch) wins (how="user"); else a model name naming a SKU of CCF's
    family lists (how="name"); else vendor/family/model(/stepping) or Arm implementer/part in
    cpu_microarch.csv (how="table"). The answer is then checked against the instruction-set flags: flags
    the answer's generation does not have mean a later one, and the flags win (how="flags").
    """
    vendor = _vendor(info)
    if override is not None:
        key = override.strip()
        if key not in known_microarchs():
            raise ValueError(
                f"hardware.cpu_microarch = {override!r} is not a known CPU microarchitecture. "
                "Allowed values: "
                f"{', '.join(known_microarchs())}. A key ending in '+' means that generation or a later one; "
                "leave hardware.cpu_microarch unset (null) to detect it from /proc/cpuinfo."
            )
        row = coefficient_rows()[key.rstrip("+")]
        note = f"hardware.cpu_microarch = {key!r} set by the user (detected: {_ids(info)}): {set_words(key)}"
        return CpuIdentity(row["vendor"], key, "user", note)
    if vendor == "unknown":
        what = f"vendor_id {info.vendor_id!r}" if info.vendor_id else "no vendor_id and no Arm implementer"
        name = f", model name {info.model_name!r}" if info.model_name else ""
        note = f"{what}{name}: not Intel, AMD or Arm, so no microarchitecture table applies"
        return CpuIdentity("unknown", None, "unknown", note)

    by_table = _by_table(info, vendor)
    by_name = _by_name(info, vendor)
    if by_name is not None:
        reason = f"model name {info.model_name!r} names {by_name.sku!r}, a SKU of {by_name.name}"
        if by_table is not None and by_table.microarch != by_name.microarch:
            reason += f" (the id table says {by_table.microarch} for {_ids(info)})"
        return _check_flags(info, vendor, by_name.microarch, reason, "name")
    if by_table is not None:
        names = "no SKU" if not info.model_name else f"no SKU in model name {info.model_name!r}"
        cited = by_table.source.split(" (")[0].split(";")[0].rsplit("/", 1)[-1]
        reason = f"{names}; {_ids(info)} is {by_table.name} ({cited})"
        return _check_flags(info, vendor, by_table.microarch, reason, "table")
    note = f"{_ids(info)}, model name {info.model_name!r}: in neither the SKU lists nor the id table"
    return CpuIdentity(vendor, None, "unknown", note)
