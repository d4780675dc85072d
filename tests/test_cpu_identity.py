"""CPU microarchitecture identification and SPECpower coefficients (ecopipe.cpuinfo, .cpu_identity,
.cpu_coefficients)."""

from __future__ import annotations

import csv
import statistics
from importlib.resources import files
from pathlib import Path

import pytest

from ecopipe.cpu_coefficients import cpu_power_coefficients, power_per_thread_w
from ecopipe.cpu_identity import CpuIdentity, identify, known_microarchs
from ecopipe.cpuinfo import parse_cpuinfo, read_cpuinfo

SAMPLES = Path(__file__).parent / "data" / "cpuinfo"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def edited(name: str, **fields: str) -> str:
    """A sample with some 'key : value' lines replaced (key with spaces as underscores)."""
    lines = []
    for line in sample(name).splitlines():
        key = line.partition(":")[0].strip().lower().replace(" ", "_")
        lines.append(f"{key.replace('_', ' ')}\t: {fields[key]}" if key in fields else line)
    return "\n".join(lines) + "\n"


def rows() -> dict[str, dict[str, str]]:
    text = files("ecopipe.data").joinpath("cpu_power_specpower.csv").read_text(encoding="utf-8")
    return {row["microarch"]: row for row in csv.DictReader(text.splitlines())}


def band(row: dict[str, str], which: str) -> tuple[float, float, float]:
    return tuple(float(row[f"{which}_w_{end}"]) for end in ("low", "point", "high"))


# --- parsing ----------------------------------------------------------------------------------------


def test_parse_x86_reads_the_first_processor_block():
    first, second = sample("amd_epyc_milan_vm.txt").split("\n\n", 1)
    info = parse_cpuinfo(first + "\n\n" + second.replace("model\t\t: 1", "model\t\t: 99"))
    assert (info.vendor_id, info.family, info.model, info.stepping) == ("AuthenticAMD", 25, 1, 1)
    assert info.model_name == "AMD EPYC"
    assert {"avx2", "vaes", "clwb"} <= info.flags and "avx512f" not in info.flags
    assert info.implementer is None and info.part is None


def test_parse_arm_reads_implementer_part_and_lower_case_features():
    info = parse_cpuinfo(sample("arm_neoverse_n1_graviton2.txt"))
    assert info.implementer == 0x41 and info.part == 0xD0C
    assert info.vendor_id == "" and info.family is None and info.model is None
    assert {"asimd", "atomics", "asimddp"} <= info.flags


def test_read_cpuinfo_of_a_missing_file_gives_empty_fields(tmp_path):
    info = read_cpuinfo(tmp_path / "absent")
    assert info.vendor_id == "" and info.family is None and info.flags == frozenset()
    assert identify(info).vendor == "unknown"


# --- identification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vendor", "microarch", "how"),
    [
        ("amd_epyc_milan_vm.txt", "amd", "zen3", "table"),  # this machine: family 25 model 1, "AMD EPYC"
        ("intel_ci_vm_model167_amx.txt", "intel", "sapphire_rapids+", "flags"),
        ("amd_epyc_genoa_9654.txt", "amd", "zen4", "name"),
        ("intel_cascade_lake_gcp_n2.txt", "intel", "cascade_lake", "table"),  # model 85 stepping 7
        ("intel_skylake_sp_gcp_n1.txt", "intel", "skylake_sp", "table"),  # model 85 stepping 4
        ("intel_ice_lake_sp_azure_dv5.txt", "intel", "ice_lake", "name"),  # model 106
        ("arm_neoverse_n1_graviton2.txt", "arm", "neoverse_n1", "table"),
        ("hygon_c86_7185.txt", "unknown", None, "unknown"),
        ("riscv_sifive_u74.txt", "unknown", None, "unknown"),
    ],
)
def test_samples_identify(name, vendor, microarch, how):
    identity = identify(read_cpuinfo(SAMPLES / name))
    assert (identity.vendor, identity.microarch, identity.how) == (vendor, microarch, how)
    assert identity.note and "\n" not in identity.note


def test_ci_vm_note_states_the_contradiction():
    note = identify(parse_cpuinfo(sample("intel_ci_vm_model167_amx.txt"))).note
    words = ("model 167 (0xA7)", "Rocket Lake", "amx_bf16 amx_int8 amx_tile", "Sapphire Rapids or later")
    assert all(word in note for word in words), note


def test_ci_vm_without_amx_is_rocket_lake_from_the_table():
    text = sample("intel_ci_vm_model167_amx.txt")
    for flag in ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx_vnni"):
        text = text.replace(f" {flag} ", " ")
    identity = identify(parse_cpuinfo(text))
    assert (identity.microarch, identity.how) == ("rocket_lake", "table")


@pytest.mark.parametrize(
    ("stepping", "microarch"),
    [(0, "skylake_sp"), (4, "skylake_sp"), (5, "cascade_lake"), (7, "cascade_lake"), (11, "cooper_lake")],
)
def test_model_85_is_told_apart_by_stepping(stepping, microarch):
    info = parse_cpuinfo(edited("intel_skylake_sp_gcp_n1.txt", stepping=str(stepping)))
    assert (identify(info).microarch, identify(info).how) == (microarch, "table")


def test_model_85_with_vnni_is_at_least_cascade_lake():
    text = sample("intel_skylake_sp_gcp_n1.txt").replace(" arat ", " arat avx512_vnni ")
    identity = identify(parse_cpuinfo(text))  # stepping 4, but VNNI: the flags win
    assert (identity.microarch, identity.how) == ("cascade_lake", "flags")
    assert "avx512_vnni" in identity.note and "Skylake-SP" in identity.note
    text = sample("intel_cascade_lake_gcp_n2.txt").replace(" avx512_vnni ", " avx512_vnni avx512_bf16 ")
    assert identify(parse_cpuinfo(text)).microarch == "cooper_lake"


def test_model_name_naming_a_ccf_sku_wins_over_the_table():
    text = edited("intel_skylake_sp_gcp_n1.txt", model_name="Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz")
    identity = identify(parse_cpuinfo(text))
    assert (identity.microarch, identity.how) == ("cascade_lake", "name")
    assert "Platinum 8280" in identity.note and "skylake_sp" in identity.note  # the table's other answer
    # CCF lists "8370C" as Cascade Lake and "Platinum 8370C" as Ice Lake: the longer SKU wins
    text = edited("intel_skylake_sp_gcp_n1.txt", model_name="Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz")
    assert identify(parse_cpuinfo(text)).microarch == "ice_lake"


@pytest.mark.parametrize(
    ("family", "model", "microarch"),
    [
        (0x17, 0x01, "zen1"),  # Naples
        (0x17, 0x31, "zen2"),  # Rome
        (0x17, 0x71, "zen2_client"),  # Matisse
        (0x19, 0x01, "zen3"),  # Milan
        (0x19, 0x21, "zen3_client"),  # Vermeer
        (0x19, 0x11, "zen4"),  # Genoa
        (0x19, 0xA0, "zen4"),  # Bergamo / Siena
        (0x19, 0x61, "zen4_client"),  # Raphael
        (0x1A, 0x02, "zen5"),  # Turin
        (0x1A, 0x11, "zen5"),  # Turin Dense
        (0x1A, 0x44, "zen5_client"),  # Granite Ridge
    ],
)
def test_amd_generations_by_family_and_model(family, model, microarch):
    text = edited("amd_epyc_milan_vm.txt", cpu_family=str(family), model=str(model))
    if family == 0x17:  # Zen 1/2 lack VAES; Zen 1 also CLWB
        text = text.replace(" vaes ", " ").replace(" clwb ", " clwb " if model >= 0x30 else " ")
    if family == 0x1A or microarch.startswith("zen4"):
        text = text.replace(" vaes ", " vaes avx512f avx512_bf16 avx512_vnni ")
    identity = identify(parse_cpuinfo(text))
    assert (identity.microarch, identity.how) == (microarch, "table")


def test_avx512_on_family_0x19_contradicts_zen3():
    text = sample("amd_epyc_milan_vm.txt").replace(" vaes ", " vaes avx512f ")
    identity = identify(parse_cpuinfo(text))
    assert (identity.vendor, identity.microarch, identity.how) == ("amd", "zen4", "flags")
    assert "avx512f" in identity.note and "Zen 3" in identity.note


def test_arm_parts():
    text = sample("arm_neoverse_n1_graviton2.txt").replace("0xd0c", "0xd40")  # Graviton3
    identity = identify(parse_cpuinfo(text))
    assert (identity.vendor, identity.microarch, identity.how) == ("arm", "neoverse_v1", "table")
    assert not cpu_power_coefficients(identity).known
    text = sample("arm_neoverse_n1_graviton2.txt").replace("0xd0c", "0xfff")
    identity = identify(parse_cpuinfo(text))
    assert (identity.vendor, identity.microarch, identity.how) == ("arm", None, "unknown")


def test_unknown_intel_model_keeps_the_vendor():
    identity = identify(parse_cpuinfo(edited("intel_skylake_sp_gcp_n1.txt", model="26")))  # Nehalem-EP
    assert (identity.vendor, identity.microarch, identity.how) == ("intel", None, "unknown")
    assert cpu_power_coefficients(identity).label.startswith("Intel server range")


def test_override():
    info = read_cpuinfo(SAMPLES / "amd_epyc_milan_vm.txt")
    identity = identify(info, "cascade_lake")
    assert (identity.vendor, identity.microarch, identity.how) == ("intel", "cascade_lake", "user")
    assert identify(info, "sapphire_rapids+").microarch == "sapphire_rapids+"
    with pytest.raises(ValueError) as error:
        identify(info, "pentium4")
    message = str(error.value)
    assert "hardware.cpu_microarch" in message and "'pentium4'" in message
    for key in ("cascade_lake", "zen3", "neoverse_n1", "sapphire_rapids+"):
        assert key in message
    assert "\n" not in message


def test_known_microarchs_cover_every_table_and_coefficient_key():
    keys = set(known_microarchs())
    table = files("ecopipe.data").joinpath("cpu_microarch.csv").read_text(encoding="utf-8")
    table_rows = list(csv.DictReader(table.splitlines()))
    assert {row["microarch"] for row in table_rows} <= keys
    assert all(row["source"] for row in table_rows)
    assert {key for key in rows() if not key.startswith("range:")} <= keys
    assert "sapphire_rapids+" in keys and "range:all" not in keys


# --- coefficients -----------------------------------------------------------------------------------


def test_ci_vm_coefficients_are_the_union_of_spr_emr_gnr():
    coefficients = cpu_power_coefficients(identify(read_cpuinfo(SAMPLES / "intel_ci_vm_model167_amx.txt")))
    assert coefficients.known and coefficients.results == 47 + 4 + 22
    # SPR (0.604167, 1.036286, 1.947917) EMR (0.672500, 0.814010, 0.976562) GNR (0.235352, 0.581588, 1.133721)
    assert coefficients.idle_w == pytest.approx((0.235352, 0.810628, 1.947917), abs=1e-6)
    # SPR (2.666667, 4.160476, 8.145833) EMR (2.691667, 4.482031, 7.625000) GNR (1.157227, 2.527471, 3.238372)
    assert coefficients.full_w == pytest.approx((1.157227, 3.723326, 8.145833), abs=1e-6)
    assert coefficients.memory_gb_per_thread == pytest.approx(1.5333)  # median of 2.0, 1.5333, 1.4884


@pytest.mark.parametrize(
    ("microarch", "utilisation", "expected"),
    [
        # cascade_lake: idle (0.336607, 0.690298, 2.333333), full (2.955357, 4.063194, 6.020833)
        ("cascade_lake", 0.25, (0.9912945, 1.533522, 3.255208)),
        ("cascade_lake", 0.8, (2.431607, 3.3886148, 5.283333)),
        # zen3: idle (0.295312, 0.455625, 0.746094), full (1.585938, 1.957334, 2.328125)
        ("zen3", 0.25, (0.6179685, 0.83105225, 1.14160175)),
        ("zen3", 0.8, (1.3278128, 1.6569922, 2.0117188)),
        # neoverse_n1: idle (0.558594, 0.735089, 1.142187), full (1.101562, 1.705915, 2.093750)
        ("neoverse_n1", 0.25, (0.694336, 0.9777955, 1.38007775)),
        ("neoverse_n1", 0.8, (0.9929684, 1.5117498, 1.9034374)),
    ],
)
def test_power_per_thread_by_hand(microarch, utilisation, expected):
    coefficients = cpu_power_coefficients(CpuIdentity("x", microarch, "user", ""))
    assert power_per_thread_w(coefficients, utilisation) == pytest.approx(expected, abs=1e-9)


def test_utilisation_is_clamped():
    coefficients = cpu_power_coefficients(CpuIdentity("intel", "cascade_lake", "user", ""))
    assert power_per_thread_w(coefficients, -0.5) == pytest.approx(coefficients.idle_w)
    assert power_per_thread_w(coefficients, 3.0) == pytest.approx(coefficients.full_w)


def test_low_point_high_are_ordered_everywhere():
    identities = [CpuIdentity("x", key, "user", "") for key in known_microarchs()]
    identities += [CpuIdentity(vendor, None, "unknown", "") for vendor in ("intel", "amd", "arm", "unknown")]
    for identity in identities:
        coefficients = cpu_power_coefficients(identity)
        for low, point, high in (coefficients.idle_w, coefficients.full_w):
            assert 0 < low <= point <= high, identity.microarch
        assert coefficients.results > 0 and coefficients.memory_gb_per_thread > 0


def test_unknown_band_is_wider_than_every_known_one():
    unknown = cpu_power_coefficients(identify(read_cpuinfo(SAMPLES / "riscv_sifive_u74.txt")))
    assert not unknown.known
    known = [row for row in rows().values() if row["known"] == "true"]
    assert len(known) == 18
    for row in known:
        for which, wide in (("idle", unknown.idle_w), ("full", unknown.full_w)):
            low, _, high = band(row, which)
            assert wide[0] <= low and high <= wide[2], row["microarch"]
            assert wide[2] - wide[0] > high - low, row["microarch"]


def test_identified_microarch_without_family_gets_its_vendors_server_range():
    rocket = cpu_power_coefficients(CpuIdentity("intel", "rocket_lake", "table", ""))
    assert not rocket.known and "Intel server range" in rocket.label
    intel_server = [r for r in rows().values() if r["vendor"] == "intel" and r["known"] == "true"]
    for row in intel_server:
        for which, wide in (("idle", rocket.idle_w), ("full", rocket.full_w)):
            low, _, high = band(row, which)
            assert wide[0] <= low and high <= wide[2], row["microarch"]
    servers = [r for r in intel_server if r["segment"] == "server"]
    assert rocket.idle_w[1] == pytest.approx(statistics.fmean(band(r, "idle")[1] for r in servers), abs=1e-6)
    assert cpu_power_coefficients(CpuIdentity("amd", "zen3_client", "table", "")).label.startswith("Zen 3")


def test_points_equal_ccfs_published_coefficients():
    # cloud-carbon-footprint/ccf-coefficients output/coefficients-aws-use.csv @ b0032d928c78 (Min/Max Watts)
    published = {
        "cascade_lake": (0.6902978319127387, 4.063193520161689),
        "sapphire_rapids": (1.0362861003136936, 4.160476336606656),
        "zen3": (0.45562453497023814, 1.957333519345238),
    }
    table = rows()
    for key, (idle, full) in published.items():
        assert float(table[key]["idle_w_point"]) == pytest.approx(idle, abs=5e-7)  # CSV rounds to 1e-6 W
        assert float(table[key]["full_w_point"]) == pytest.approx(full, abs=5e-7)
    # CCF's published EPYC 5th Gen averages 1039 results (blank lines in its SKU list); ours the 41 Zen 5 ones
    assert table["zen5"]["results"] == "41" and float(table["zen5"]["ccf_published_full_w"]) > 8


def test_ranges_are_the_union_of_their_server_families():
    table = rows()
    for range_key, vendor in (("range:intel", "intel"), ("range:amd", "amd"), ("range:all", None)):
        members = [
            r
            for r in table.values()
            if r["known"] == "true" and r["segment"] == "server" and vendor in (None, r["vendor"])
        ]
        for which in ("idle", "full"):
            bands = [band(r, which) for r in members]
            expected = (
                min(b[0] for b in bands),
                statistics.fmean(b[1] for b in bands),
                max(b[2] for b in bands),
            )
            assert band(table[range_key], which) == pytest.approx(expected, abs=1e-6), range_key
        assert int(table[range_key]["results"]) == sum(int(r["results"]) for r in members)


def test_flag_tables_name_only_known_keys():
    from ecopipe.cpu_identity import FLAGS_OF, LINEAGES

    keys = set(known_microarchs())
    assert set(FLAGS_OF) <= keys
    assert {k for lineages in LINEAGES.values() for lineage in lineages.values() for k in lineage} <= keys
