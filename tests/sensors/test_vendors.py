"""A new vendor is one module plus one line in discovery.VENDORS: discovery picks it in its place in the
order, and the sampler's own process rebuilds its power reading from the sensor's class path."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ecopipe.monitor.sampler import PowerSampler
from ecopipe.sensors import discovery
from ecopipe.sensors.base import Component
from ecopipe.sensors.discovery import discover_sensors
from tests.sensors import acme

ROOT = Path(__file__).resolve().parents[2]


def test_a_vendor_added_by_one_line_is_discovered_and_traced_by_the_sampler(monkeypatch, caplog, tmp_path):
    card = tmp_path / "acme" / "acme0"  # gpu0 is an Acme card; gpu1 is not
    card.mkdir(parents=True)
    (card / "energy_mj").write_text("1000\n")
    (card / "power_mw").write_text("42500\n")
    monkeypatch.setattr(acme, "ROOT", tmp_path / "acme")
    monkeypatch.setattr(discovery, "VENDORS", [acme.discover, *discovery.VENDORS])  # the one line
    # The sampler's process imports the vendor's module by its path, as it would a package's.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 1], powercap_root=tmp_path / "no-rapl")
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [(type(s), s.device) for s in gpus] == [(acme.AcmeGpuSensor, "gpu0")]
    # The vendors after it were asked only for what it left: NVML for gpu1 (none here), never for gpu0.
    gpu_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gpu")]
    assert gpu_lines and all(line.startswith("gpu1: ") for line in gpu_lines)

    (gpu,) = gpus
    gpu.open()
    (card / "energy_mj").write_text("3500\n")
    assert gpu.read_joules() == 2.5
    sampler = PowerSampler(gpus, frequency_hz=50.0)
    sampler.start()
    time.sleep(0.1)
    trace = sampler.stop()
    powers = trace.samples["power_w.gpu:gpu0"]
    assert len(powers) >= 2 and (powers == 42.5).all()  # read from the card by the sampler's process
