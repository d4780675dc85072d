"""Test doubles shared by the test files: clocks and CPU-time sources moved by hand, and the hardware this
machine lacks (RAPL's sysfs tree, a cgroup tree, NVML behind the real pynvml bindings, torch's CUDA UUIDs).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ecopipe.sensors import rapl


def ticks(*values: float):
    """A clock returning the given instants in order (fails loudly if read more often than planned)."""
    it = iter(values)
    return lambda: next(it)


class ScriptedClock:
    """Time the test moves by hand; `read_cost_s` also moves it at every read, as real reads take time."""

    def __init__(self, read_cost_s: float = 0.0) -> None:
        self.now = 0.0
        self.read_cost_s = read_cost_s

    def __call__(self) -> float:
        self.now += self.read_cost_s
        return self.now


def busy(*cpu_seconds: float):
    """A CPU-seconds source returning the given totals in order, whatever is excluded."""
    it = iter(cpu_seconds)
    return lambda _exclude: next(it)


EPYC_7763 = "AMD EPYC 7763 64-Core Processor"  # 280 W, 64 cores / 128 threads per package


def make_zone(path: Path, name: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def fake_powercap(root: Path) -> Path:
    """Two sockets; socket 0 has core, uncore and dram subzones (nested as in sysfs), plus psys and mmio."""
    pkg0 = make_zone(root / "intel-rapl:0", "package-0", 1_000)
    make_zone(pkg0 / "intel-rapl:0:0", "core", 10)
    make_zone(pkg0 / "intel-rapl:0:1", "uncore", 20)
    make_zone(pkg0 / "intel-rapl:0:2", "dram", 30)
    make_zone(root / "intel-rapl:1", "package-1", 2_000)
    make_zone(root / "intel-rapl:1:0", "core", 40)  # flat layout (sysfs symlinks) works too
    make_zone(root / "intel-rapl:2", "psys", 50)
    make_zone(root / "intel-rapl-mmio:0", "package-0", 60)
    return root


def powercap_with_dram(root: Path) -> Path:
    """fake_powercap with a dram zone on both packages: RAPL can meter both the CPU and the RAM."""
    make_zone(fake_powercap(root) / "intel-rapl:1" / "intel-rapl:1:1", "dram", 70)
    return root


def deny_energy_reads(
    monkeypatch: pytest.MonkeyPatch, zone: Callable[[Path], bool] = lambda folder: True
) -> None:
    """RAPL's energy_uj unreadable (as for a non-root user since Linux 5.10) in the zones `zone` picks."""
    real = rapl._read_text

    def deny(path: Path) -> str:
        if path.name == "energy_uj" and zone(path.parent):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", deny)


def make_cgroup(root: Path, group: str, name: str, text: str) -> None:
    folder = root / group.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text + "\n")


try:
    import pynvml
except ImportError:  # a dependency, but keep the tests that do not need it running without it
    pynvml = None
needs_pynvml = pytest.mark.skipif(pynvml is None, reason="nvidia-ml-py not installed")


class FakeNvml:
    """Stands in for the NVML C library behind the real pynvml bindings (real NVMLError classes)."""

    def __init__(self, monkeypatch, energy_mj=(), instant_mw=(), usage_mw=(), instant_ok=True):
        self.energy, self.instant, self.usage = list(energy_mj), list(instant_mw), list(usage_mw)
        self.instant_ok = instant_ok
        self.shutdowns = 0
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceGetPowerUsage",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        if index != 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return "handle0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.energy.pop(0)

    def nvmlDeviceGetFieldValues(self, handle, fields):
        assert fields == [pynvml.NVML_FI_DEV_POWER_INSTANT]
        if not self.instant_ok:
            return [SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=1, value=None)]
        mw = self.instant.pop(0)
        return [SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, valueType=1, value=SimpleNamespace(uiVal=mw))]

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.usage.pop(0)


class FakeNvmlGpus(FakeNvml):
    """NVML's view of GPUs and MIG instances this machine lacks, found by UUID (real NVMLError classes).

    `gpus`: UUID -> NVML index; `instances`: MIG instance UUID -> its GPU's NVML index; `mig_mode`: NVML
    index -> current MIG mode (a GPU missing from it is not MIG-capable: NVML answers NotSupported).
    """

    def __init__(self, monkeypatch, gpus, instances=None, mig_mode=None, slices=None, **counters):
        super().__init__(monkeypatch, **counters)
        self.gpus, self.instances, self.mig_mode = gpus, instances or {}, mig_mode or {}
        self.slices = slices or {}  # MIG instance UUID -> its GPU slices (of 7); missing: NotSupported
        self.looked_up: list[str] = []
        for name in (
            "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetIndex",
            "nvmlDeviceIsMigDeviceHandle",
            "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
            "nvmlDeviceGetMigMode",
            "nvmlDeviceGetAttributes",
            "nvmlDeviceGetMaxMigDeviceCount",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def nvmlDeviceGetAttributes(self, handle):
        if handle[0] != "mig" or handle[1] not in self.slices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpuInstanceSliceCount=self.slices[handle[1]])

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7  # A100 and H100: seven 1g instances at most

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes):
        self.looked_up.append(uuid.decode())
        if uuid.decode() in self.instances:
            return ("mig", uuid.decode())
        if uuid.decode() not in self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return ("gpu", self.gpus[uuid.decode()])

    def nvmlDeviceGetIndex(self, handle):
        kind, index = handle
        assert kind == "gpu", "a MIG handle has no NVML index of a GPU"
        return index

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return ctypes.c_uint(handle[0] == "mig")  # as the real binding returns it: a c_uint, not an int

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("gpu", self.instances[handle[1]])

    def nvmlDeviceGetMigMode(self, handle):
        if handle[1] not in self.mig_mode:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [self.mig_mode[handle[1]], self.mig_mode[handle[1]]]


def torch_uuids(monkeypatch, uuids: dict[int, str]) -> None:
    """torch's view of CUDA devices this machine lacks: the UUID it prints for each CUDA index."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))
