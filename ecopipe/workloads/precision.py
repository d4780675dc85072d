"""Precision made real: what a precision means on a device, refused before loading when it cannot run.

- fp32, fp16, bf16: the weights (and so the compute) in that dtype. Half precisions are refused when a
  kernel the family needs is missing on the device (probed on tiny tensors) or, on CUDA, when the
  card has no native bf16.
- int8 on the CPU: dynamic quantisation of the nn.Linear layers (int8 weights, activations quantised
  on the fly), via torch.ao.quantization.quantize_dynamic. GPT-2's Conv1D projections are converted
  to nn.Linear first, so they are quantised too.
- int8/int4 on CUDA: weight-only quantisation with torchao when installed, else bitsandbytes through
  transformers (pretrained weights only); neither installed: refused.
- int4 on the CPU: refused (no maintained int4 kernel for nn.Linear on the CPU in this stack).

Both quantised paths touch nn.Linear layers only, so a model whose weights sit mostly in convolutions
(ResNet) is refused rather than reported as int8 while it computes in fp32.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ecopipe.config import ConfigError, Precision

log = logging.getLogger(__name__)

FLOAT_DTYPES = {Precision.fp32: torch.float32, Precision.fp16: torch.float16, Precision.bf16: torch.bfloat16}
DYNAMIC_INT8 = "qint8 (dynamic, nn.Linear)"
# Below this share of matmul/conv weights in nn.Linear layers, "int8" would describe a model that still
# computes mostly in float: refused.
MIN_LINEAR_SHARE = 0.5


def _kernel_probes(device: str, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    def t(*shape: int) -> torch.Tensor:
        return torch.ones(*shape, dtype=dtype, device=device)

    return {
        "linear": lambda: F.linear(t(2, 8), t(4, 8)),
        "layer_norm": lambda: F.layer_norm(t(2, 8), (8,)),
        "softmax": lambda: F.softmax(t(2, 8), -1),
        "gelu": lambda: F.gelu(t(2, 8)),
        "silu": lambda: F.silu(t(2, 8)),
        "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(
            t(1, 2, 4, 8), t(1, 2, 4, 8), t(1, 2, 4, 8), is_causal=True
        ),
        "embedding": lambda: F.embedding(torch.zeros(2, dtype=torch.long, device=device), t(4, 8)),
        "conv1d": lambda: F.conv1d(t(1, 2, 8), t(4, 2, 3)),
        "conv2d": lambda: F.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3)),
        "batch_norm": lambda: F.batch_norm(t(1, 3, 4, 4), t(3), t(3)),
        "max_pool2d": lambda: F.max_pool2d(t(1, 3, 8, 8), 2),
        "cross_entropy": lambda: F.cross_entropy(t(2, 8), torch.zeros(2, dtype=torch.long, device=device)),
    }


def check_kernels(device: str, dtype: torch.dtype, precision_name: str, kernels: Sequence[str]) -> None:
    """Refuse a dtype the device has no kernel for, before any weights load (not mid-job)."""
    missing: list[str] = []
    probes = _kernel_probes(device, dtype)
    for name in kernels:
        try:
            probes[name]()
        except (RuntimeError, NotImplementedError, TypeError) as error:
            missing.append(f"{name} ({str(error).splitlines()[0]})")
    if missing:
        raise ConfigError(
            f"precision={precision_name} cannot run on {device}: torch {torch.__version__} has no {dtype} "
            f"kernel for {', '.join(missing)}. Use precision=fp32 there, or a device that supports {dtype}."
        )


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision is realised on a device, decided before anything loads."""

    precision: Precision
    device: str
    load_dtype: torch.dtype  # dtype the weights are built or loaded in (before any quantisation)
    method: str  # float | dynamic_int8 | torchao_int8 | torchao_int4 | bnb_int8 | bnb_int4
    load_kwargs: dict[str, Any] = field(
        default_factory=dict
    )  # extra from_pretrained arguments (bitsandbytes)

    @property
    def quantised_on_load(self) -> bool:
        return self.method.startswith("bnb_")


def linear_share(model: nn.Module) -> float:
    """Share of matmul/conv weights held by nn.Linear (or GPT-2's Conv1D): what int8/int4 can touch."""
    linear = other = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        if isinstance(module, (nn.Linear, Conv1D)):
            linear += weight.numel()
        elif isinstance(module, nn.modules.conv._ConvNd):
            other += weight.numel()
    return linear / (linear + other) if linear + other else 0.0


def _half_dtype_for_cuda(device: str) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def plan_precision(
    precision: Precision, device: str, model_name: str, share: float, pretrained: bool, kernels: Sequence[str]
) -> PrecisionPlan:
    """Decide how `precision` runs on `device` for a model, or raise ConfigError saying why it cannot."""
    allowed = "fp32, fp16, bf16, int8 (int4 on CUDA)"
    cuda = device.startswith("cuda")
    if precision in FLOAT_DTYPES:
        dtype = FLOAT_DTYPES[precision]
        if (
            precision is Precision.bf16
            and cuda
            and not torch.cuda.is_bf16_supported(including_emulation=False)
        ):
            raise ConfigError(
                f"precision=bf16 cannot run on {device} ({torch.cuda.get_device_name(device)}): the card "
                "has no native bfloat16 (compute capability 8.0 or newer needed). Use precision=fp16 or "
                "fp32."
            )
        if dtype is not torch.float32:
            check_kernels(device, dtype, precision.value, kernels)
        return PrecisionPlan(precision, device, dtype, "float")

    if share < MIN_LINEAR_SHARE:
        raise ConfigError(
            f"precision={precision.value} cannot be honest for model={model_name}: int8/int4 quantise "
            f"nn.Linear layers only, and this model holds {share:.0%} of its matmul/conv weights in them "
            "(the rest are convolutions that would stay in float). Use precision=fp32, fp16 or bf16."
        )
    if not cuda:
        if precision is Precision.int4:
            raise ConfigError(
                f"precision=int4 cannot run on {device}: torch's CPU quantisation has no int4 path for "
                "nn.Linear and the int4 weight-only kernels (torchao, bitsandbytes) need a CUDA device. "
                "Allowed on the CPU: fp32, fp16, bf16, int8."
            )
        if not hasattr(torch.ao.quantization, "quantize_dynamic"):
            raise ConfigError(
                f"precision=int8 cannot run on {device}: torch {torch.__version__} no longer ships "
                "torch.ao.quantization.quantize_dynamic. Use precision=fp32, fp16 or bf16."
            )
        engines = set(torch.backends.quantized.supported_engines) - {"none"}
        if not engines:
            raise ConfigError(
                f"precision=int8 cannot run on {device}: this torch build has no quantised CPU engine "
                "(fbgemm, x86 or qnnpack). Use precision=fp32, fp16 or bf16."
            )
        return PrecisionPlan(precision, device, torch.float32, "dynamic_int8")

    bits = 8 if precision is Precision.int8 else 4
    compute = _half_dtype_for_cuda(device)
    if importlib.util.find_spec("torchao") is not None:
        return PrecisionPlan(
            precision, device, torch.bfloat16 if bits == 4 else compute, f"torchao_int{bits}"
        )
    if importlib.util.find_spec("bitsandbytes") is not None:
        if not pretrained:
            raise ConfigError(
                f"precision={precision.value} with model.weights=random needs torchao on CUDA "
                "(bitsandbytes quantises only while loading pretrained weights): pip install torchao, or "
                f"use model.weights=pretrained. Allowed here: {allowed}."
            )
        from transformers import BitsAndBytesConfig

        quant = (
            BitsAndBytesConfig(load_in_8bit=True)
            if bits == 8
            else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
            )
        )
        return PrecisionPlan(
            precision,
            device,
            compute,
            f"bnb_int{bits}",
            {"quantization_config": quant, "device_map": {"": device}},
        )
    raise ConfigError(
        f"precision={precision.value} on {device} needs a weight-only quantisation library: neither "
        "torchao nor bitsandbytes is installed (pip install torchao). Allowed without one: fp32, fp16, "
        "bf16."
    )


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace GPT-2's Conv1D (y = x W + b, W is in x out) by the same nn.Linear; returns the count."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(child.nx, child.nf, device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
                replaced += 1
    return replaced


def apply_precision(model: nn.Module, plan: PrecisionPlan) -> tuple[nn.Module, dict[str, Any]]:
    """Quantise a float model as the plan says; returns the model and facts about what changed."""
    if plan.method in ("float", "bnb_int8", "bnb_int4"):
        return model, {}
    if plan.method == "dynamic_int8":
        converted = conv1d_to_linear(model)
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao, which has no CPU dynamic int8 path
            # in this stack; the refusal above covers its eventual removal.
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
            model = torch.ao.quantization.quantize_dynamic(
                model, {nn.Linear}, dtype=torch.qint8, inplace=True
            )
        quantised = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
        return model, {"conv1d_converted": converted, "quantised_linear": quantised}
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    # torchao's default int4 packing ("plain") needs the separate mslk kernels; "tile_packed_to_4d" runs
    # on torch's own int4 matmul (tinygemm), so int4 works with torchao alone (0.17 and 0.18 alike).
    int4 = Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")
    quantize_(model, Int8WeightOnlyConfig() if plan.method == "torchao_int8" else int4)
    quantised, linear = _torchao_linear_counts(model)
    if quantised == 0:  # torchao skips layers whose shape its kernels cannot take, silently
        raise ConfigError(
            f"precision={plan.precision.value}: torchao quantised none of the model's {linear} linear layers "
            "(int4 needs input features divisible by its group size, 128); use another precision."
        )
    return model, {"quantised_linear": quantised, "linear": linear}


def _torchao_linear_counts(model: nn.Module) -> tuple[int, int]:
    """(linear layers whose weight torchao replaced by a quantised tensor, all linear layers)."""
    from torchao.utils import TorchAOBaseTensor

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return sum(isinstance(m.weight, TorchAOBaseTensor) for m in linears), len(linears)


def describe_dtype(model: nn.Module, plan: PrecisionPlan) -> str:
    """What the weights actually hold after precision was applied."""
    if plan.method == "dynamic_int8":
        return DYNAMIC_INT8
    if plan.method.startswith("torchao"):  # what the weights hold, counted: torchao skips some layers
        quantised, linear = _torchao_linear_counts(model)
        bits = plan.method.split("_")[1]
        held = f"torchao, {quantised} of {linear} linear layers"
        return f"{bits} weight-only ({held}), activations {plan.load_dtype}"
    if plan.method != "float":
        library, bits = plan.method.split("_")
        return f"{bits} weight-only ({library}), activations {plan.load_dtype}"
    counts: dict[str, int] = {}
    for parameter in model.parameters():
        counts[str(parameter.dtype)] = counts.get(str(parameter.dtype), 0) + parameter.numel()
    return max(counts, key=counts.__getitem__) if counts else "unknown"
