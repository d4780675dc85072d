"""`python -m bench.gpu.identify`: the GPU torch calls cuda:0, as NVML knows it, printed as JSON.

Run in a process of its own by the check, which then holds no CUDA context when the idle step reads
the GPU. The GPU is matched by UUID, as every job's meter matches it, never by NVML's index 0: under
CUDA_VISIBLE_DEVICES or another device order the two numberings differ. A MIG instance, or a UUID NVML
does not know, is reported as such, with `nvml_index` null: the check then reads no NVML counter.
"""

from __future__ import annotations

import json


def mig_state(mig: bool, resolved: bool) -> str:
    """Whether the GPU is a MIG instance or in MIG mode; unknown where NVML did not find it."""
    return "yes" if mig else ("no" if resolved else "unknown: NVML did not find the GPU")


def main() -> None:
    import pynvml
    import torch

    from ecopipe.hardware import environment
    from ecopipe.sensors.nvml_resolve import resolve_cuda_gpu

    gpu = resolve_cuda_gpu(0)
    own = gpu.metered and not gpu.whole_gpu  # under MIG, jobs meter the whole GPU: the check does not
    found: dict[str, object] = {
        **environment(),
        "gpu": torch.cuda.get_device_name(0),
        "cuda device": "cuda:0",
        "uuid": gpu.uuid,
        "MIG": mig_state(gpu.mig, gpu.metered or gpu.mig),
        "nvml_index": gpu.index if own else None,
        "metered as the job's own": "yes" if own else f"no: {gpu.reason}",
    }
    if own:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
        found |= {
            "nvml index (from the UUID)": gpu.index,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
        }
        pynvml.nvmlShutdown()
    print(json.dumps(found, default=str))


if __name__ == "__main__":
    main()
