"""Rebuild ecopipe/data/cpu_power_specpower.csv from Cloud Carbon Footprint's coefficient files.

Cloud Carbon Footprint (CCF, github.com/cloud-carbon-footprint/ccf-coefficients) averages
SPECpower_ssj2008 results per CPU family. This script does the same selection and averaging, and
adds what CCF does not publish: the spread of the family's results (the band's low and high ends),
the number of results and the median memory per thread. It needs no network: pass the paths of the
files of a CCF checkout (or their directory with --ccf).

    python scripts/derive_cpu_power.py --ccf /path/to/ccf-coefficients --commit <sha>
    python scripts/derive_cpu_power.py --ccf ... --commit <sha> --check   # exit 1 if the CSV differs

Selection (as CCF's ccfcoef/specpower.py and ccfcoef/cpu_info.py do it): a SPECpower result belongs
to a family when its "CPU Description" ends with one of the family list's entries, preceded by a word
boundary, case-insensitively. The entries are used as regular expressions, unescaped, as CCF does
("Gold 6548Y+" therefore matches "Gold 6548Y"). One deliberate difference: blank lines of a family list
are skipped. CCF turns them into the pattern r"\\b$", which matches almost every result; that is why
CCF's published "EPYC 5th Gen" averages 1039 of the 1088 results of SPECpower-2026-03-09.

Per family: point = mean over its results of (watts / Total Threads), at active idle and at 100 %,
exactly CCF's "Min Watts" and "Max Watts"; low/high = min/max of the same ratios; memory = median of
Total Memory (GB) / Total Threads. Vendor ranges (for an identified microarchitecture that has no
SPECpower family, or an unidentified one) span the vendor's server families: low = min of lows,
high = max of highs, point = mean of points, memory = median of the families' medians.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "ecopipe" / "data"

# CCF family (ccfcoef/cli.py CPU_FAMILIES: name, list file) -> our key, vendor, segment.
# Segment is that of the SPECpower results: the four oldest Intel families and Ice Lake list client
# SKUs too (CCF's lists), but their results are Xeon servers; CCF's two client families (Skylake
# (Client), Coffee Lake) were measured on Xeon E3 v5 / E-2100/E-2200 servers built on client dies.
FAMILIES = [
    ("EPYC 1st Gen", "amd-epyc-gen1", "zen1", "amd", "server"),
    ("EPYC 2nd Gen", "amd-epyc-gen2", "zen2", "amd", "server"),
    ("EPYC 3rd Gen", "amd-epyc-gen3", "zen3", "amd", "server"),
    ("EPYC 4th Gen", "amd-epyc-gen4", "zen4", "amd", "server"),
    ("EPYC 5th Gen", "amd-epyc-gen5", "zen5", "amd", "server"),
    ("Neoverse N1", "amd-neoverse-n1", "neoverse_n1", "arm", "server"),
    ("Sandy Bridge", "intel-sandybridge", "sandy_bridge", "intel", "server"),
    ("Ivy Bridge", "intel-ivybridge", "ivy_bridge", "intel", "server"),
    ("Haswell", "intel-haswell", "haswell", "intel", "server"),
    ("Broadwell", "intel-broadwell", "broadwell", "intel", "server"),
    ("Skylake (Server)", "intel-skylake-server", "skylake_sp", "intel", "server"),
    ("Skylake (Client)", "intel-skylake-client", "skylake_client", "intel", "client"),
    ("Cascade Lake", "intel-cascadelake", "cascade_lake", "intel", "server"),
    ("Coffee Lake", "intel-coffeelake", "coffee_lake", "intel", "client"),
    ("Ice Lake", "intel-icelake", "ice_lake", "intel", "server"),
    ("Sapphire Rapids", "intel-sapphirerapids", "sapphire_rapids", "intel", "server"),
    ("Granite Rapids", "intel-graniterapids", "granite_rapids", "intel", "server"),
    ("Emerald Rapids", "intel-emeraldrapids", "emerald_rapids", "intel", "server"),
]
# Which SKU lists the name step may use for which vendor (amd-neoverse-n1 holds Ampere Altra SKUs).
SKU_VENDOR = {"amd": "amd", "arm": "arm", "intel": "intel"}

RANGES = {
    "range:intel": ("intel", "Intel server range (microarchitecture unknown)"),
    "range:amd": ("amd", "AMD server range (microarchitecture unknown)"),
    "range:all": (None, "All-server range (vendor or microarchitecture unknown)"),
}
VENDOR_NAMES = {"intel": "Intel", "amd": "AMD", "arm": "Arm"}
# Arm has one SPECpower family (Neoverse N1): one family is no range, so Arm keys without a family
# (and Arm CPUs of unknown core) take the all-server range.
VENDOR_RANGE = {"intel": "range:intel", "amd": "range:amd", "arm": "range:all"}

COLUMNS = [
    "microarch",
    "vendor",
    "segment",
    "label",
    "ccf_family",
    "known",
    "results",
    "idle_w_low",
    "idle_w_point",
    "idle_w_high",
    "full_w_low",
    "full_w_point",
    "full_w_high",
    "memory_gb_per_thread",
    "ccf_published_idle_w",
    "ccf_published_full_w",
    "source",
]
W_DIGITS = 6  # W per thread: 1 µW, far below the spread of any family
GB_DIGITS = 4


@dataclass
class Band:
    results: int
    idle: tuple[float, float, float]
    full: tuple[float, float, float]
    memory: float


def read_skus(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_spec(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float:
    """A SPECpower cell; CCF reads 'NC' (not compliant) as missing."""
    return math.nan if text.strip() in ("", "NC") else float(text)


def family_band(spec: list[dict[str, str]], skus: list[str]) -> tuple[Band, list[dict[str, str]]]:
    pattern = re.compile("|".join(rf"\b{sku}$" for sku in skus), re.IGNORECASE)
    rows = [row for row in spec if pattern.search(row["CPU Description"])]
    idle = [number(r["avg. watts @ active idle"]) / number(r["Total Threads"]) for r in rows]
    full = [number(r["avg. watts @ 100%"]) / number(r["Total Threads"]) for r in rows]
    memory = [number(r["Total Memory (GB)"]) / number(r["Total Threads"]) for r in rows]
    idle = [v for v in idle if not math.isnan(v)]
    full = [v for v in full if not math.isnan(v)]
    memory = [v for v in memory if not math.isnan(v)]
    band = Band(
        results=len(rows),
        idle=(min(idle), statistics.fmean(idle), max(idle)),
        full=(min(full), statistics.fmean(full), max(full)),
        memory=statistics.median(memory),
    )
    return band, rows


def union(bands: list[Band]) -> Band:
    return Band(
        results=sum(b.results for b in bands),
        idle=(
            min(b.idle[0] for b in bands),
            statistics.fmean(b.idle[1] for b in bands),
            max(b.idle[2] for b in bands),
        ),
        full=(
            min(b.full[0] for b in bands),
            statistics.fmean(b.full[1] for b in bands),
            max(b.full[2] for b in bands),
        ),
        memory=statistics.median(b.memory for b in bands),
    )


def read_published(path: Path) -> dict[str, tuple[float, float]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            row["Architecture"]: (float(row["Min Watts"]), float(row["Max Watts"]))
            for row in csv.DictReader(handle)
        }


def read_keys(microarch_csv: Path) -> dict[str, tuple[str, str, str]]:
    """key -> (vendor, segment, display name) from the identification table's cpuid/arm rows."""
    keys: dict[str, tuple[str, str, str]] = {}
    with microarch_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["match"] == "sku":
                continue
            keys.setdefault(row["microarch"], (row["vendor"], row["segment"], row["microarch_name"]))
    return keys


def fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def band_cells(band: Band) -> dict[str, str]:
    return {
        "results": str(band.results),
        "idle_w_low": fmt(band.idle[0], W_DIGITS),
        "idle_w_point": fmt(band.idle[1], W_DIGITS),
        "idle_w_high": fmt(band.idle[2], W_DIGITS),
        "full_w_low": fmt(band.full[0], W_DIGITS),
        "full_w_point": fmt(band.full[1], W_DIGITS),
        "full_w_high": fmt(band.full[2], W_DIGITS),
        "memory_gb_per_thread": fmt(band.memory, GB_DIGITS),
    }


def derive(args: argparse.Namespace) -> tuple[str, list[dict[str, str]]]:
    spec = read_spec(args.spec)
    published = read_published(args.published)
    keys = read_keys(args.microarch)
    spec_date = re.search(r"\d{4}-\d{2}-\d{2}", args.spec.name)
    spec_name = (
        args.spec.name if spec_date is None else f"{args.spec.name} (SPECpower file of {spec_date[0]})"
    )
    repo = "cloud-carbon-footprint/ccf-coefficients"

    rows: list[dict[str, str]] = []
    bands: dict[str, tuple[str, str, Band]] = {}
    skus_out: list[dict[str, str]] = []
    for family, short, key, vendor, segment in FAMILIES:
        skus = read_skus(args.families / f"{short}.csv")
        band, _ = family_band(spec, skus)
        bands[key] = (vendor, segment, band)
        name = keys.get(key, (vendor, segment, family))[2]
        ccf = published.get(family)
        label = f"{name}, CCF family '{family}' (SPECpower, {band.results} results)"
        if name == family:
            label = f"{name} (SPECpower, {band.results} results)"
        rows.append(
            {
                "microarch": key,
                "vendor": vendor,
                "segment": segment,
                "label": label,
                "ccf_family": family,
                "known": "true",
                **band_cells(band),
                "ccf_published_idle_w": "" if ccf is None else repr(ccf[0]),
                "ccf_published_full_w": "" if ccf is None else repr(ccf[1]),
                "source": f"{repo}@{args.commit[:12]} data/{short}.csv + data/{spec_name}; "
                "selection and means as ccfcoef/specpower.py",
            }
        )
        seen: set[str] = set()
        for sku in skus:
            if sku.lower() in seen:
                continue
            seen.add(sku.lower())
            skus_out.append(
                {
                    "match": "sku",
                    "vendor": SKU_VENDOR[vendor],
                    "sku": sku,
                    "microarch": key,
                    "microarch_name": name,
                    "segment": segment,
                    "name": f"CCF family '{family}'",
                    "source": f"{repo}@{args.commit[:12]} data/{short}.csv",
                }
            )

    range_bands: dict[str, Band] = {}
    for range_key, (vendor, label) in RANGES.items():
        members = [
            band
            for key, (v, segment, band) in bands.items()
            if segment == "server" and (vendor is None or v == vendor)
        ]
        names = [k for k, (v, s, _) in bands.items() if s == "server" and (vendor is None or v == vendor)]
        range_bands[range_key] = union(members)
        rows.append(
            {
                "microarch": range_key,
                "vendor": vendor or "unknown",
                "segment": "server",
                "label": label,
                "ccf_family": "",
                "known": "false",
                **band_cells(range_bands[range_key]),
                "ccf_published_idle_w": "",
                "ccf_published_full_w": "",
                "source": f"union of the server families {', '.join(names)}: min of lows, mean of points, "
                "max of highs, median of memory medians",
            }
        )

    for key, (vendor, segment, name) in sorted(keys.items()):
        if key in bands:
            continue
        range_key = VENDOR_RANGE[vendor]
        scope = RANGES[range_key][1].split(" (")[0]
        why = "" if vendor != "arm" else " (Arm has a single SPECpower family)"
        rows.append(
            {
                "microarch": key,
                "vendor": vendor,
                "segment": segment,
                "label": f"{name}: no SPECpower family; {scope}{why}",
                "ccf_family": "",
                "known": "false",
                **band_cells(range_bands[range_key]),
                "ccf_published_idle_w": "",
                "ccf_published_full_w": "",
                "source": f"{range_key} row",
            }
        )

    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue(), skus_out


def rewrite_skus(microarch_csv: Path, skus: list[dict[str, str]]) -> str:
    with microarch_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        kept = [row for row in reader if row["match"] != "sku"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    writer.writerows({c: row.get(c, "") for c in columns} for row in skus)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ccf", type=Path, help="a ccf-coefficients checkout; sets the defaults below")
    parser.add_argument("--spec", type=Path, help="SPECpower results, e.g. data/SPECpower-2026-03-09.csv")
    parser.add_argument("--families", type=Path, help="directory of the family lists (data/intel-*.csv...)")
    parser.add_argument("--published", type=Path, help="CCF's output/coefficients-aws-use.csv")
    parser.add_argument("--commit", required=True, help="the CCF commit the files come from (cited)")
    parser.add_argument("--microarch", type=Path, default=DATA / "cpu_microarch.csv")
    parser.add_argument("--out", type=Path, default=DATA / "cpu_power_specpower.csv")
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 on difference"
    )
    args = parser.parse_args(argv)
    if args.ccf is not None:
        args.spec = args.spec or args.ccf / "data" / "SPECpower-2026-03-09.csv"
        args.families = args.families or args.ccf / "data"
        args.published = args.published or args.ccf / "output" / "coefficients-aws-use.csv"
    if args.spec is None or args.families is None or args.published is None:
        parser.error("give --ccf, or all of --spec, --families and --published")

    coefficients, skus = derive(args)
    table = rewrite_skus(args.microarch, skus)
    if args.check:
        same = args.out.read_text(encoding="utf-8") == coefficients
        same_table = args.microarch.read_text(encoding="utf-8") == table
        for path, ok in ((args.out, same), (args.microarch, same_table)):
            print(f"{path}: {'up to date' if ok else 'DIFFERS'}")
        return 0 if same and same_table else 1
    args.out.write_text(coefficients, encoding="utf-8")
    args.microarch.write_text(table, encoding="utf-8")
    print(f"wrote {args.out} and the SKU rows of {args.microarch} ({len(skus)} SKUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
