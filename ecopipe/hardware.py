"""Which device a job runs on, what that device is, and the environment record of the machine."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, replace

import psutil

from ecopipe.config import ConfigError, HardwareConfig
from ecopipe.hardware_table import HardwareProfile, hardware_profiles, match_hardware

log = logging.getLogger(__name__)

# Server CPUs that the table does not list still sit in data centres; anything else unknown is
# treated as a desktop (no facility overhead). Both are stated in the summary and overridable.
_SERVER_CPU_WORDS = ("xeon", "epyc", "graviton", "ampere")
SIMULATED = "(SIMULATED)"  # the label of anything a simulated GPU (monitor.fake_gpu_watts) produced

PACKAGES = (
    "ecopipe",
    "torch",
    "transformers",
    "torchao",
    "datasets",
    "scikit-learn",
    "mlflow",
    "hydra-core",
    "omegaconf",
    "nvidia-ml-py",
    "psutil",
    "numpy",
    "pandas",
)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str, cpu_only: bool = False) -> str:
    """`auto` becomes the first GPU when there is one; a CUDA request without CUDA is refused."""
    if requested == "auto":
        return "cuda:0" if not cpu_only and cuda_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if cpu_only:
        raise ConfigError(
            f"hardware.device={requested} cannot run this model: it runs on the CPU only; "
            "use hardware.device=cpu or auto."
        )
    if not cuda_available():
        raise ConfigError(
            f"hardware.device={requested} is not available on this machine (no CUDA device); "
            "use hardware.device=cpu or auto."
        )
    import torch

    index = int(requested.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"hardware.device={requested} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}."
        )
    return f"cuda:{index}"


def gpu_index(device: str) -> int | None:
    """The CUDA index of a device string; None for the CPU."""
    return int(device.partition(":")[2] or 0) if device.startswith("cuda") else None


@dataclass(frozen=True)
class MeteredGpus:
    """The GPUs a job's meter reads, by NVML index, and why the job's own GPU is left out if it is."""

    indices: tuple[int, ...] = ()
    unmetered: str | None = None  # one line: the job's GPU is not metered at all, and why
    whole_gpu: str | None = None  # one line: the meter reads the whole physical GPU (MIG), and why
    mig_share: float | None = None  # the MIG instance's share of that GPU, where NVML says


def metered_gpus(device: str, fake_gpu_watts: float | None) -> MeteredGpus:
    """The job's own GPU, matched by UUID (CUDA's and NVML's numbering may differ), never by index; or
    device 0 simulated (CI only) for a job on the CPU with fake_gpu_watts. A GPU NVML cannot match is
    left unmetered, and a MIG one is metered as the whole physical GPU, each with a warning saying why."""
    index = gpu_index(device)
    if index is None:
        return MeteredGpus(() if fake_gpu_watts is None else (0,))
    from ecopipe.sensors.nvml_resolve import resolve_cuda_gpu

    gpu = resolve_cuda_gpu(index)
    if not gpu.metered:
        log.warning("GPU energy NOT measured: %s", gpu.reason)
        return MeteredGpus((), gpu.reason)
    if gpu.whole_gpu:
        log.warning("GPU energy is the WHOLE GPU's, not the job's own: %s", gpu.reason)
        return MeteredGpus((gpu.index,), whole_gpu=gpu.reason, mig_share=gpu.share)
    return MeteredGpus((gpu.index,))


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model_name(index: int) -> str:
    import torch

    return torch.cuda.get_device_name(index)


@dataclass(frozen=True)
class DeviceProfile:
    """What the job reports its hardware as: detected, or the profile the user chose."""

    key: str  # table key, or "unknown"
    name: str  # table name, or the detected device name
    detected_name: str
    tier: str
    tdp_w: float | None
    embodied_kgco2e: float | None
    source: str
    tier_assumed: bool = False  # the tier is a default for an unlisted device, not the table's or the user's


def _from_table(key: str, row: HardwareProfile, detected: str, tier: str | None) -> DeviceProfile:
    return DeviceProfile(
        key, row.name, detected, tier or row.tier, row.tdp_w, row.embodied_kgco2e, row.source
    )


def device_profile(cfg: HardwareConfig, device: str, simulated_gpu: bool = False) -> DeviceProfile:
    """The profile of the device the job measures: the GPU when it uses one, else the CPU.

    A GPU profile on a CPU job is refused (its energy would be filed under the wrong hardware) unless
    the GPU is simulated (`simulated_gpu`: monitor.fake_gpu_watts), and then its name says so.
    """
    profiles = hardware_profiles()
    index = gpu_index(device)
    detected = gpu_model_name(index) if index is not None else cfg.cpu_model or cpu_model_name()
    if cfg.profile is not None:
        if cfg.profile not in profiles:
            raise ConfigError(
                f"hardware.profile={cfg.profile} is unknown; allowed: {', '.join(sorted(profiles))}."
            )
        chosen = profiles[cfg.profile]
        if chosen.kind == "gpu" and index is None:
            if not simulated_gpu:
                raise ConfigError(
                    f"hardware={cfg.profile} is a GPU profile, but this job runs on the CPU ({detected}): "
                    "its energy would be reported under the wrong hardware. Use a CUDA device, or "
                    "hardware=auto."
                )
            # A table column must never pass for the real card: the name carries the label.
            chosen = replace(chosen, name=f"{chosen.name} {SIMULATED}")
        return _from_table(cfg.profile, chosen, detected, cfg.tier)
    row = match_hardware(detected)
    if row is not None:
        key = next(k for k, v in profiles.items() if v == row)
        return _from_table(key, row, detected, cfg.tier)
    # A CUDA device missing from the table is most likely a data-centre card (the table lists the
    # common consumer ones): assuming a desktop would drop the PUE and on-site water (CO2e 36% low).
    server = index is not None or any(word in detected.lower() for word in _SERVER_CPU_WORDS)
    if cfg.tier is not None:
        source = f"not in the hardware table; tier '{cfg.tier}' set by hardware.tier"
        return DeviceProfile("unknown", detected, detected, cfg.tier, None, None, source)
    tier = "datacenter" if server else "desktop"
    log.warning(
        "%s %r is not in the hardware table: tier %s assumed (set hardware.profile or "
        "hardware.tier to change it).",
        "CUDA device" if index is not None else "CPU",
        detected,
        tier,
    )
    source = f"not in the hardware table; tier '{tier}' assumed from the device name"
    return DeviceProfile("unknown", detected, detected, tier, None, None, source, tier_assumed=True)


def environment() -> dict[str, object]:
    """Machine and software facts recorded with every run (tags and a JSON artifact)."""
    memory = psutil.virtual_memory()
    env: dict[str, object] = {
        "cpu_model": cpu_model_name(),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "process_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(memory.total / 2**30, 2),
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
    for package in PACKAGES:
        try:
            env[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[f"version.{package}"] = None
    return env


def gpu_environment(indices: Sequence[int]) -> dict[str, object]:
    """Model, driver, power limit, clocks and neighbours of each GPU the job uses; warns on sharing."""
    from ecopipe.sensors.base import SensorUnavailable
    from ecopipe.sensors.nvml import nvml_device_info

    env: dict[str, object] = {}
    for index in indices:
        try:
            info = nvml_device_info(index)
        except SensorUnavailable as err:
            log.info("gpu%d: no NVML device record (%s)", index, err)
            continue
        if info["other_pids"]:
            # Inside a container NVML reports host PIDs, so this job's own context may be among them.
            log.warning(
                "gpu%d has processes other than this one (NVML pids %s): whatever they draw is in this "
                "job's GPU energy (in a container, NVML's host pids may include this job itself).",
                index,
                info["other_pids"],
            )
        env.update({f"gpu{index}.{key}": value for key, value in info.items() if key != "index"})
    return env
