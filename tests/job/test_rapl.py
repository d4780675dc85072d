"""The job on a RAPL tree this machine lacks (faked in sysfs layout): set aside on request, or shared."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ecopipe.job import run_job
from ecopipe.monitor.energy import machine_meter
from ecopipe.names import Tag, TagFamily
from ecopipe.sensors import discovery
from ecopipe.sensors.base import Source
from tests.fakes import powercap_with_dram


def test_monitor_rapl_false_estimates_beside_a_readable_rapl(make_cfg, client, monkeypatch, tmp_path):
    """A RAPL tree this machine lacks, faked in sysfs layout: readable, yet set aside on request."""
    monkeypatch.setattr(discovery, "POWERCAP_ROOT", powercap_with_dram(tmp_path / "powercap"))
    meter = machine_meter([])  # what the job's meter finds without the key: RAPL for the CPU and the RAM
    assert {s.source for s in meter.sensors} == {Source.RAPL}
    meter.close()
    outcome = run_job(make_cfg("monitor.rapl=false"))
    tags = client.get_run(outcome.run_id).data.tags
    assert (tags[TagFamily.ENERGY_SOURCE.of("cpu")], tags[TagFamily.ENERGY_SOURCE.of("ram")]) == (
        "estimated_specpower",
        "estimated_rss",
    )
    assert (tags[TagFamily.ENERGY_SET_ASIDE.of("cpu")], tags[TagFamily.ENERGY_SET_ASIDE.of("ram")]) == (
        "rapl",
        "rapl",
    )
    assert "cpu estimated_specpower (ESTIMATE: rapl set aside on request)" in outcome.summary


class CountingZones:
    """The fake RAPL zones' counters advance as a real package's would, at `watts` each, while a job runs."""

    def __init__(self, root: Path, watts: float) -> None:
        self.files = [p for p in root.rglob("energy_uj") if "psys" not in (p.parent / "name").read_text()]
        self.watts, self._stop = watts, threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)

    def _count(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.005):
            now = time.perf_counter()
            for path in self.files:  # written beside, then renamed: a reader never sees half a file
                spare = path.with_name("energy_uj.next")
                spare.write_text(f"{int(path.read_text()) + int(self.watts * (now - last) * 1e6)}\n")
                spare.replace(path)
            last = now

    def __enter__(self) -> CountingZones:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_rapl_charges_the_job_its_share_and_logs_the_whole_machine(make_cfg, client, monkeypatch, tmp_path):
    """A RAPL tree this machine lacks, faked in sysfs layout with counters that move: the job is charged
    its share of busy CPU time, the whole machine's figure stands beside it, and the words say so."""
    root = powercap_with_dram(tmp_path / "powercap")
    monkeypatch.setattr(discovery, "POWERCAP_ROOT", root)
    with CountingZones(root, watts=20.0):
        shared = run_job(make_cfg())
        whole = run_job(make_cfg("monitor.rapl_attribution=whole_machine", "seed=1"))
    run = client.get_run(shared.run_id).data
    assert (run.tags[TagFamily.ENERGY_SOURCE.of("cpu")], run.tags[TagFamily.ENERGY_SOURCE.of("ram")]) == (
        "rapl_job_share",
        "rapl_job_share",
    )
    assert run.tags[TagFamily.ENERGY_MEASURED.of("cpu")] == "true" and run.tags[Tag.FIGURES] == "measured"
    share, metrics = run.metrics["job_cpu_share"], run.metrics
    assert 0 < share <= 1
    # The job's gross CPU energy is its share of the whole package's, trial by trial.
    assert metrics["energy_gross_j.cpu"] <= metrics["energy_machine_j.cpu"]
    history = {
        key: [m.value for m in sorted(client.get_metric_history(shared.run_id, key), key=lambda m: m.step)]
        for key in ("trial_energy_j.cpu", "trial_job_cpu_share", "trial_energy_machine_j.cpu")
    }
    for job, part, whole_machine in zip(*history.values(), strict=True):
        assert 0 < part <= 1 and job == pytest.approx(part * whole_machine, rel=1e-9)
    assert (
        "attribution cpu and ram from RAPL, which counts every process: charged the job's" in shared.summary
    )
    assert "cpu rapl_job_share" in shared.summary
    other = client.get_run(whole.run_id).data
    assert other.tags[TagFamily.ENERGY_SOURCE.of("cpu")] == "rapl" and "job_cpu_share" not in other.metrics
    assert "energy_machine_j.cpu" not in other.metrics and "attribution" not in whole.summary
