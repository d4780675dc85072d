"""Discovery: the best sensor per GPU, CPU and RAM, and why at every fallback, without the hardware."""

from __future__ import annotations

import logging
import sys

import pytest

from ecopipe.sensors.base import Component, Source
from ecopipe.sensors.discovery import discover_sensors
from ecopipe.sensors.estimated import EstimatedCpuSensor, EstimatedRamSensor, cpu_power
from ecopipe.sensors.fake import FakeGpuSensor
from ecopipe.sensors.nvml import NvmlCounterSensor, NvmlPowerPollingSensor
from ecopipe.sensors.rapl import RAPL_SET_ASIDE
from tests.fakes import (
    EPYC_7763,
    FakeNvml,
    deny_energy_reads,
    fake_powercap,
    make_zone,
    needs_pynvml,
    powercap_with_dram,
    pynvml,
)


@needs_pynvml
def test_discover_no_nvml_library_returns_no_gpu_and_warns(monkeypatch, caplog, tmp_path):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path)
    assert [s for s in sensors if s.component is Component.GPU] == []
    gpu_lines = [r.getMessage() for r in caplog.records if "gpu0" in r.getMessage()]
    assert len(gpu_lines) == 1 and "NVML" in gpu_lines[0]  # one line: polling is not retried in vain


def test_discover_without_pynvml_installed(monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 1], powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvidia-ml-py" in caplog.text


@needs_pynvml
def test_discover_no_permission_skips_gpu(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[1, 2])

    def denied(index):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", denied)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path)
    assert not any(s.component is Component.GPU for s in sensors)
    assert "permission" in caplog.text.lower()


@needs_pynvml
def test_discover_prefers_counter_then_polling(monkeypatch, caplog, tmp_path):
    FakeNvml(monkeypatch, energy_mj=[5])
    (gpu,) = [s for s in discover_sensors([0], powercap_root=tmp_path) if s.component is Component.GPU]
    assert isinstance(gpu, NvmlCounterSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported (pre-Volta)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0, 7], powercap_root=tmp_path)  # index 7 does not exist
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [type(s) for s in gpus] == [NvmlPowerPollingSensor]
    assert "nvml_counter unavailable" in caplog.text and "gpu7" in caplog.text
    gpus[0].close()


@needs_pynvml
def test_discover_forced_gpu_sensor(monkeypatch, caplog, tmp_path):
    """monitor.gpu_sensor: `polling` is used even where the counter works; `counter` never falls back."""
    FakeNvml(monkeypatch, energy_mj=[5], instant_mw=[100_000])
    polling = (Source.NVML_POWER_POLLING,)
    sensors = discover_sensors([0], powercap_root=tmp_path, gpu_sources=polling)
    (gpu,) = [s for s in sensors if s.component is Component.GPU]
    assert isinstance(gpu, NvmlPowerPollingSensor)
    gpu.close()

    FakeNvml(monkeypatch, instant_mw=[100_000])  # counter NotSupported
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([0], powercap_root=tmp_path, gpu_sources=(Source.NVML_COUNTER,))
    assert not any(s.component is Component.GPU for s in sensors)
    assert "nvml_counter unavailable" in caplog.text and "GPU energy NOT measured" in caplog.text


def test_discover_without_rapl_falls_back_to_labelled_estimates(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors(
            [], cpu_power("Intel Xeon Platinum 8380"), powercap_root=tmp_path / "absent", job_cpus=2
        )
    by_component = {s.component: s for s in sensors}
    assert set(by_component) == {Component.CPU, Component.RAM}
    cpu, ram = by_component[Component.CPU], by_component[Component.RAM]
    assert isinstance(cpu, EstimatedCpuSensor) and cpu.share.threads == 2
    assert cpu.share.power.identity.microarch == "ice_lake"
    assert isinstance(ram, EstimatedRamSensor) and ram.source is Source.ESTIMATED_RSS
    # The memory Ice Lake's SPECpower servers hold per thread (1.6 GB) is in the cpu figure already.
    assert ram.allowance_gb == pytest.approx(2 * 1.6)
    assert "CPU energy is an ESTIMATE" in caplog.text and "RAM energy is an ESTIMATE" in caplog.text
    machine = discover_sensors([], powercap_root=tmp_path, ram_estimate="machine")
    assert [s.source for s in machine if s.component is Component.RAM] == [Source.ESTIMATED_PER_GB]
    with pytest.raises(ValueError, match="job, machine"):
        discover_sensors([], powercap_root=tmp_path, ram_estimate="installed")


def test_discover_uses_rapl_dram_only_where_every_package_has_one(caplog, tmp_path):
    root = fake_powercap(tmp_path / "one")  # dram on package 0 of 2
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=root)
    assert [(s.component, s.device, s.source) for s in sensors] == [
        (Component.CPU, "package-0", Source.RAPL),
        (Component.CPU, "package-1", Source.RAPL),
        (Component.RAM, "ram", Source.ESTIMATED_RSS),
    ]
    assert "dram zone on 1 of 2 packages" in caplog.text
    make_zone(root / "intel-rapl:1" / "intel-rapl:1:1", "dram", 70)
    sensors = discover_sensors([], powercap_root=root)
    assert [(s.device, s.source) for s in sensors if s.component is Component.RAM] == [
        ("dram-0", Source.RAPL),
        ("dram-1", Source.RAPL),
    ]
    for sensor in sensors:
        sensor.close()


def test_discover_sets_readable_rapl_aside_on_request(caplog, tmp_path):
    """monitor.rapl=false: an estimate beside the RAPL counter on one host, and the log says why."""
    root = powercap_with_dram(tmp_path)
    with caplog.at_level(logging.WARNING):
        metered = discover_sensors([], powercap_root=root)
    assert {(s.component, s.source) for s in metered} == {
        (Component.CPU, Source.RAPL),
        (Component.RAM, Source.RAPL),
    }
    assert "ESTIMATE" not in caplog.text
    for sensor in metered:
        sensor.close()
    with caplog.at_level(logging.WARNING):
        estimated = discover_sensors([], powercap_root=root, rapl=False)
    assert [s.source for s in estimated] == [Source.ESTIMATED_SPECPOWER, Source.ESTIMATED_RSS]
    assert f"CPU energy is an ESTIMATE (estimated_specpower), {RAPL_SET_ASIDE}: " in caplog.text
    assert f"RAM energy is an ESTIMATE (estimated_rss), {RAPL_SET_ASIDE}: " in caplog.text
    assert RAPL_SET_ASIDE == "RAPL set aside on request (monitor.rapl=false)"
    assert "no readable RAPL" not in caplog.text and "no RAPL dram zone" not in caplog.text


def test_rapl_is_said_to_be_set_aside_only_where_it_was_readable(caplog, tmp_path):
    """monitor.rapl=false on a host without RAPL, or with dram on one package only, sets aside no more
    than was there: the meter's set_aside (the tags) and the log say what really happened."""
    from ecopipe.monitor.energy import EnergyMeter

    with caplog.at_level(logging.WARNING):
        nothing = discover_sensors([], powercap_root=tmp_path / "absent", rapl=False)
    assert EnergyMeter(nothing).set_aside == {} and RAPL_SET_ASIDE not in caplog.text
    assert "no readable RAPL package" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # dram on package 0 only: RAM was never measurable here
        packages_only = discover_sensors([], powercap_root=fake_powercap(tmp_path / "p"), rapl=False)
    assert EnergyMeter(packages_only).set_aside == {"cpu": "rapl"}
    assert f"CPU energy is an ESTIMATE (estimated_specpower), {RAPL_SET_ASIDE}" in caplog.text
    assert "RAM energy is an ESTIMATE (estimated_rss), no RAPL dram zone" in caplog.text
    both = discover_sensors([], powercap_root=powercap_with_dram(tmp_path / "d"), rapl=False)
    assert EnergyMeter(both).set_aside == {"cpu": "rapl", "ram": "rapl"}


def test_discover_rapl_permission_denied_falls_back(monkeypatch, caplog, tmp_path):
    deny_energy_reads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=fake_powercap(tmp_path))
    assert {s.source for s in sensors} == {Source.ESTIMATED_SPECPOWER, Source.ESTIMATED_RSS}
    assert "chmod" in caplog.text


def test_discover_fake_gpu_per_index(tmp_path):
    sensors = discover_sensors([0, 2], fake_gpu_watts=300.0, powercap_root=tmp_path)
    gpus = [s for s in sensors if s.component is Component.GPU]
    assert [(type(s), s.device, s.source) for s in gpus] == [
        (FakeGpuSensor, "gpu0", Source.FAKE),
        (FakeGpuSensor, "gpu2", Source.FAKE),
    ]


def test_machine_meter_takes_the_ram_estimate_asked_for():
    from ecopipe.monitor.energy import machine_meter

    for asked, source in (("machine", Source.ESTIMATED_PER_GB), ("job", Source.ESTIMATED_RSS)):
        (ram,) = [s for s in machine_meter([], ram_estimate=asked).sensors if s.component is Component.RAM]
        if ram.source is Source.RAPL:
            pytest.skip("this machine has a RAPL dram zone: no estimate to choose")
        assert ram.source is source


def test_machine_meter_takes_the_cpu_power_given():
    from ecopipe.monitor.energy import machine_meter

    given = cpu_power(EPYC_7763)
    (cpu,) = [s for s in machine_meter([], cpu_power=given).sensors if s.component is Component.CPU]
    if not isinstance(cpu, EstimatedCpuSensor):
        pytest.skip("this machine has readable RAPL: no estimate to check")
    assert cpu.share.power is given and cpu.method.startswith("Zen 3 (EPYC)")


def test_unreadable_dram_keeps_the_package_measured_and_says_why(monkeypatch, caplog, tmp_path):
    """A dram file that cannot be read leaves RAM estimated, with the reason in the tags and the
    summary's label; the readable packages stay measured (before: the whole of RAPL was thrown away)."""
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.names import TagFamily
    from ecopipe.report import meter_tags

    root = powercap_with_dram(tmp_path)
    # the dram sub-zones only (intel-rapl:N:M named dram)
    deny_energy_reads(
        monkeypatch, lambda zone: zone.name.count(":") == 2 and (zone / "name").read_text().strip() == "dram"
    )
    with caplog.at_level(logging.WARNING):
        sensors = discover_sensors([], powercap_root=root)
    assert [(s.component, s.source) for s in sensors] == [
        (Component.CPU, Source.RAPL),
        (Component.CPU, Source.RAPL),
        (Component.RAM, Source.ESTIMATED_RSS),
    ]
    assert "the package stays measured" in caplog.text
    ram = sensors[-1]
    assert ram.fallback.startswith("RAPL dram unreadable: ") and "chmod" in ram.fallback
    meter = EnergyMeter(sensors)
    tags = meter_tags(meter, "cpu")
    assert tags[TagFamily.ENERGY_FALLBACK.of("ram")] == ram.fallback
    assert TagFamily.ENERGY_FALLBACK.of("cpu") not in tags
    assert tags["energy_measured.cpu"] == "true" and tags["energy_measured.ram"] == "false"
    for sensor in sensors:
        sensor.close()
