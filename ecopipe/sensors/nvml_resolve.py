"""Which NVML GPU a CUDA device is: found by its UUID, never by index; a MIG instance is its GPU's.

Needs pynvml only (through ecopipe.sensors.nvml), so the GPU check can run it in a bare GPU image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ecopipe.sensors.nvml import import_pynvml


@dataclass(frozen=True)
class ResolvedGpu:
    """The GPU torch calls cuda:N, as NVML knows it: what the job's GPU meter may read as its own."""

    cuda_index: int
    uuid: str  # NVML's name for it (GPU-... or MIG-...) when NVML knows it, else torch's
    index: int | None  # the NVML index the meter reads (under MIG, the whole GPU's); None: unmetered
    mig: bool  # a MIG instance, or a GPU in MIG mode: NVML documents its counter per physical GPU
    reason: str | None = None  # one line: why the GPU is not metered as the job's own
    # A MIG instance's share of its GPU: its slices over the most instances the GPU holds; None: unknown
    share: float | None = None

    @property
    def metered(self) -> bool:
        return self.index is not None

    @property
    def whole_gpu(self) -> bool:
        """Metered, but by the whole physical GPU's counter (MIG): never the job's own energy."""
        return self.mig and self.index is not None


def _nvml_names(uuid: str) -> tuple[str, str]:
    """NVML's two possible names of a UUID as torch prints it (its 16 bytes, no prefix): a whole GPU's
    (GPU-...) and, where CUDA's device is a MIG instance, the instance's (MIG-...); the one given first."""
    bare = uuid.removeprefix("GPU-").removeprefix("MIG-")
    gpu, mig = f"GPU-{bare}", f"MIG-{bare}"
    return (mig, gpu) if uuid.startswith("MIG-") else (gpu, mig)


def _flag(nv: ModuleType, query: Callable[[Any], Any], handle: Any) -> bool:
    """A yes/no NVML query; a GPU or driver without the feature answers no (MIG starts with the Ampere
    A100, per NVIDIA's MIG User Guide, so older GPUs answer NotSupported)."""
    try:
        answer = query(handle)
    except nv.NVMLError as err:
        if getattr(err, "value", None) in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND):
            return False
        raise
    return bool(getattr(answer, "value", answer))  # pynvml returns some flags as a ctypes c_uint


def _mig_enabled(nv: ModuleType, handle: Any) -> bool:
    return _flag(nv, lambda h: nv.nvmlDeviceGetMigMode(h)[0] == nv.NVML_DEVICE_MIG_ENABLE, handle)


def _handle_by_uuid(nv: ModuleType, uuid: str) -> tuple[str, Any] | None:
    """NVML's name and handle of the GPU or MIG instance with this UUID; None where NVML knows none."""
    for name in _nvml_names(uuid):
        try:
            return name, nv.nvmlDeviceGetHandleByUUID(name.encode())
        except nv.NVMLError as err:
            if getattr(err, "value", None) not in (nv.NVML_ERROR_NOT_FOUND, nv.NVML_ERROR_INVALID_ARGUMENT):
                raise
    return None


def _resolve(nv: ModuleType, cuda_index: int, uuid: str) -> ResolvedGpu:
    device = f"cuda:{cuda_index}"
    found = _handle_by_uuid(nv, uuid)
    if found is None:
        why = f"{device}: NVML knows no GPU or MIG instance with UUID {uuid}"
        return ResolvedGpu(cuda_index, uuid, None, False, why)
    name, handle = found
    if _flag(nv, nv.nvmlDeviceIsMigDeviceHandle, handle):
        gpu = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        parent = int(nv.nvmlDeviceGetIndex(gpu))
        share = _mig_share(nv, handle, gpu)
        holds = f"{share:.0%} of it" if share is not None else "an unknown share of it"
        why = (
            f"{device} is MIG instance {name} of NVML GPU {parent}, holding {holds}: NVML's counter covers "
            "the whole GPU, every instance's work included"
        )
        return ResolvedGpu(cuda_index, name, parent, True, why, share)
    index = int(nv.nvmlDeviceGetIndex(handle))
    if _mig_enabled(nv, handle):
        why = f"{device} is NVML GPU {index} ({name}) in MIG mode: its counter covers every MIG instance"
        return ResolvedGpu(cuda_index, name, index, True, why)
    return ResolvedGpu(cuda_index, name, index, False)


def _mig_share(nv: ModuleType, instance: Any, gpu: Any) -> float | None:
    """The instance's GPU slices over the most MIG devices its GPU can hold (7 on A100 and H100: one per
    compute slice, per NVIDIA's MIG User Guide); None where NVML cannot say."""
    try:
        slices = nv.nvmlDeviceGetAttributes(instance).gpuInstanceSliceCount
        most = nv.nvmlDeviceGetMaxMigDeviceCount(gpu)
    except nv.NVMLError:
        return None
    return slices / most if most else None


def resolve_gpu(cuda_index: int, uuid: str) -> ResolvedGpu:
    """The GPU CUDA calls `cuda_index`, found in NVML by its UUID (as torch reports it, with or
    without the GPU-/MIG- prefix), never by index.

    NVML ignores CUDA_VISIBLE_DEVICES (a CUDA runtime variable, which SLURM sets for jobs given GPUs
    through GRES), and "the NVML index may not correlate with other APIs, such as the CUDA device
    index" (NVML reference, nvmlDeviceGetIndex, which recommends looking devices up by PCI id or UUID),
    so the same number can name another card: a UUID NVML does not know leaves the GPU unmetered
    rather than metering a guess. Under MIG, NVML documents the energy counter and power fields per
    physical device, with no per-instance energy query, so they count every instance (as documented;
    not checked on a GPU by this project): the whole GPU is metered (`whole_gpu`) and labelled so, with
    the instance's share. Needs pynvml only; NVML is released before returning.
    """
    try:
        nv = import_pynvml()
        nv.nvmlInit()
    except Exception as err:  # no library or driver
        return ResolvedGpu(cuda_index, uuid, None, False, f"cuda:{cuda_index}: NVML not usable ({err})")
    try:
        return _resolve(nv, cuda_index, uuid)
    except nv.NVMLError as err:
        why = f"cuda:{cuda_index}: NVML cannot resolve UUID {uuid} ({type(err).__name__}: {err})"
        return ResolvedGpu(cuda_index, uuid, None, False, why)
    finally:
        with contextlib.suppress(nv.NVMLError):
            nv.nvmlShutdown()


def resolve_cuda_gpu(cuda_index: int) -> ResolvedGpu:
    """The GPU torch calls cuda:`cuda_index`, as NVML knows it (torch and pynvml only: the GPU check
    calls it in a process of its own)."""
    import torch

    return resolve_gpu(cuda_index, str(torch.cuda.get_device_properties(cuda_index).uuid))
