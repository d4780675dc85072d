"""Which NVML GPU a CUDA device is (by UUID), MIG instances included, with NVML's and torch's views faked."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from ecopipe.hardware import MeteredGpus, metered_gpus
from ecopipe.sensors.base import Source
from ecopipe.sensors.discovery import discover_sensors
from ecopipe.sensors.nvml_resolve import ResolvedGpu, resolve_cuda_gpu, resolve_gpu
from tests.fakes import FakeNvmlGpus, needs_pynvml, pynvml, torch_uuids


@needs_pynvml
def test_cuda_device_maps_to_its_nvml_index_by_uuid(monkeypatch, caplog):
    """Under SLURM, CUDA_VISIBLE_DEVICES=2,0 makes cuda:0 the card NVML calls 2: the UUID decides.

    NVML's and torch's views of GPUs this machine lacks are faked (the rule's GPU exception); the mapping
    and the job's choice of what to meter run for real.
    """
    nvml = FakeNvmlGpus(monkeypatch, {"GPU-aaaa": 2, "GPU-bbbb": 0})
    # torch reports the UUID without NVML's "GPU-" prefix; the job's device string names CUDA's index.
    torch_uuids(monkeypatch, {0: "aaaa", 1: "bbbb", 3: "cccc"})
    assert metered_gpus("cuda", None) == metered_gpus("cuda:0", None) == MeteredGpus((2,))
    assert metered_gpus("cuda:1", None) == MeteredGpus((0,))
    assert metered_gpus("cuda:1", 75.0) == MeteredGpus((0,))  # a simulated GPU's watts, on the job's own card
    assert metered_gpus("cpu", None) == MeteredGpus(())
    assert metered_gpus("cpu", 75.0) == MeteredGpus((0,))  # CI: a simulated GPU for a job on the CPU
    assert resolve_gpu(0, "GPU-aaaa") == ResolvedGpu(0, "GPU-aaaa", 2, False)  # not prefixed twice
    assert nvml.shutdowns == 5  # NVML is released after each look-up
    # NVML does not know cuda:3's UUID: no guess at CUDA's index 3 (another card, or none), a warning.
    with caplog.at_level(logging.WARNING):
        unknown = metered_gpus("cuda:3", None)
    assert unknown.indices == () and "NVML knows no GPU or MIG instance with UUID cccc" in unknown.unmetered
    assert f"GPU energy NOT measured: {unknown.unmetered}" in caplog.text
    assert nvml.looked_up[-2:] == ["GPU-cccc", "MIG-cccc"]  # both of NVML's names were tried


@needs_pynvml
def test_a_mig_instance_is_metered_as_the_whole_gpu_and_labelled_so(monkeypatch, tmp_path):
    """CUDA's device is a MIG instance (torch prints its UUID bare): NVML's counter is the whole GPU's,
    so the job reads it under nvml_counter_whole_gpu, with the instance's share, never as its own."""
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.names import Tag, TagFamily
    from ecopipe.report import meter_tags, mig_tags

    FakeNvmlGpus(
        monkeypatch,
        {"GPU-eeee": 0},
        instances={"MIG-dddd": 0},
        mig_mode={0: 1},
        slices={"MIG-dddd": 3},
        energy_mj=[1_000, 5_000],
    )
    torch_uuids(monkeypatch, {0: "dddd"})
    gpu = resolve_cuda_gpu(0)
    assert (gpu.uuid, gpu.index, gpu.mig, gpu.whole_gpu) == ("MIG-dddd", 0, True, True)
    assert gpu.share == pytest.approx(3 / 7)
    assert gpu.reason == (
        "cuda:0 is MIG instance MIG-dddd of NVML GPU 0, holding 43% of it: NVML's counter covers the whole "
        "GPU, every instance's work included"
    )
    assert resolve_gpu(0, "MIG-dddd") == gpu  # the same instance, named with its prefix
    plan = metered_gpus("cuda:0", None)
    assert plan == MeteredGpus((0,), whole_gpu=gpu.reason, mig_share=pytest.approx(3 / 7))
    sensors = discover_sensors(
        plan.indices, powercap_root=tmp_path, gpu_sources=(Source.NVML_COUNTER,), whole_gpu=plan.whole_gpu
    )
    meter = EnergyMeter(sensors)
    tags = meter_tags(meter, "cuda:0") | mig_tags(plan.mig_share, meter)
    assert tags[TagFamily.ENERGY_SOURCE.of("gpu")] == "nvml_counter_whole_gpu"
    assert tags[TagFamily.ENERGY_WHOLE_GPU.of("gpu")] == gpu.reason
    assert tags[Tag.MIG_SHARE] == "0.4286"
    for sensor in sensors:
        sensor.close()


@needs_pynvml
def test_a_mig_share_nvml_cannot_tell_is_unknown(monkeypatch):
    FakeNvmlGpus(monkeypatch, {"GPU-eeee": 0}, instances={"MIG-dddd": 0}, mig_mode={0: 1})
    gpu = resolve_gpu(0, "dddd")
    assert gpu.whole_gpu and gpu.share is None and "holding an unknown share of it" in gpu.reason


@needs_pynvml
def test_a_gpu_in_mig_mode_is_metered_as_the_whole_gpu(monkeypatch):
    """A driver naming the whole GPU to CUDA while it is in MIG mode: the counter covers every instance."""
    nvml = FakeNvmlGpus(monkeypatch, {"GPU-eeee": 1}, mig_mode={1: pynvml.NVML_DEVICE_MIG_ENABLE})
    torch_uuids(monkeypatch, {0: "eeee"})
    gpu = resolve_cuda_gpu(0)
    assert (gpu.uuid, gpu.index, gpu.mig, gpu.whole_gpu, gpu.share) == ("GPU-eeee", 1, True, True, None)
    assert gpu.reason == "cuda:0 is NVML GPU 1 (GPU-eeee) in MIG mode: its counter covers every MIG instance"
    assert metered_gpus("cuda:0", None) == MeteredGpus((1,), whole_gpu=gpu.reason)
    nvml.mig_mode[1] = pynvml.NVML_DEVICE_MIG_DISABLE  # MIG-capable, MIG off: the job's own GPU
    assert resolve_cuda_gpu(0) == ResolvedGpu(0, "GPU-eeee", 1, False)


@needs_pynvml
def test_an_unusable_nvml_leaves_the_gpu_unmetered_and_says_why(monkeypatch):
    FakeNvmlGpus(monkeypatch, {"GPU-aaaa": 0})

    def refuse(code):
        def call(*_args):
            raise pynvml.NVMLError(code)

        return call

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", refuse(pynvml.NVML_ERROR_NO_PERMISSION))
    gpu = resolve_gpu(0, "aaaa")
    assert gpu.index is None and gpu.reason.startswith("cuda:0: NVML cannot resolve UUID aaaa (")
    monkeypatch.setattr(pynvml, "nvmlInit", refuse(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    gpu = resolve_gpu(0, "aaaa")
    assert gpu.index is None and gpu.reason.startswith("cuda:0: NVML not usable (")


def test_the_gpu_resolver_needs_nothing_but_pynvml():
    """The GPU check resolves cuda:N in a process of its own: ecopipe's other dependencies are barred.

    Run here for real, without an NVIDIA driver: the GPU is left unmetered, and the reason says why.
    """
    barred = ("psutil", "omegaconf", "hydra", "mlflow", "pandas", "numpy", "scipy", "sklearn", "torch")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({barred!r}))\n"
        "from ecopipe.sensors.nvml_resolve import resolve_cuda_gpu, resolve_gpu\n"
        "print(resolve_gpu(0, 'aaaa').reason)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("cuda:0: NVML ")
