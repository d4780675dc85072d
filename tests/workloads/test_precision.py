"""Precision is real: the weights hold the dtype the run reports, int8 really replaces the linear layers,
and a precision the device or the model cannot run is refused before anything loads."""

from __future__ import annotations

import re

import pytest
import torch
import transformers
from omegaconf import OmegaConf
from torch import nn
from transformers.pytorch_utils import Conv1D

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag
from ecopipe.workloads.factory import build_workload
from ecopipe.workloads.precision import DYNAMIC_INT8, check_kernels, conv1d_to_linear
from tests.workloads.conftest import IMAGES, TEXT, no_runs, run, tiny

QUANTISED_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def loaded(make_cfg, *overrides: str):
    """The workload the job would build, loaded: to look at the weights themselves."""
    workload = build_workload(OmegaConf.to_object(make_cfg(*overrides)))
    workload.load()
    return workload


@pytest.mark.parametrize(
    "precision,dtype", [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]
)
def test_float_precisions_hold_their_dtype(make_cfg, client, precision, dtype):
    overrides = [*tiny("opt-125m"), *TEXT, f"precision={precision}"]
    metrics, tags = run(make_cfg, client, *overrides)
    assert tags[Tag.DTYPE] == str(dtype) and tags[Tag.PRECISION] == precision
    assert metrics["tokens_out"] == metrics["samples"] * 4
    workload = loaded(make_cfg, *overrides)
    assert {p.dtype for p in workload.model.parameters()} == {dtype}
    assert all(b.inputs["input_ids"].dtype == torch.long for b in workload.batches())


def test_half_precision_vision_inputs_follow_the_weights(make_cfg):
    workload = loaded(make_cfg, *tiny("vit-base-patch16-224"), *IMAGES, "precision=fp16")
    assert {b.inputs["pixel_values"].dtype for b in workload.batches()} == {torch.float16}
    assert workload.predict(workload.batches()[0]).shape == (4,)


def test_int8_on_cpu_quantises_every_linear_layer(make_cfg, client):
    overrides = [*tiny("opt-125m"), *TEXT, "precision=int8"]
    fp32 = loaded(make_cfg, *tiny("opt-125m"), *TEXT)
    linear_layers = sum(type(m) is nn.Linear for m in fp32.model.modules())
    workload = loaded(make_cfg, *overrides)
    modules = list(workload.model.modules())
    assert not any(type(m) is nn.Linear for m in modules)
    assert sum(isinstance(m, QUANTISED_LINEAR) for m in modules) == linear_layers
    assert all(m.weight().dtype == torch.qint8 for m in modules if isinstance(m, QUANTISED_LINEAR))
    facts = workload.facts()
    assert facts.dtype == DYNAMIC_INT8
    assert facts.parameters == fp32.facts().parameters  # the original parameters, not the packed ones

    metrics, tags = run(make_cfg, client, *overrides)
    assert tags[Tag.DTYPE] == DYNAMIC_INT8
    assert metrics["tokens_out"] == metrics["samples"] * 4
    assert metrics["parameters"] == fp32.facts().parameters


def test_int8_gpt2_converts_conv1d_then_quantises(make_cfg, client):
    overrides = [*tiny("gpt2"), *TEXT, "precision=int8"]
    workload = loaded(make_cfg, *overrides)
    modules = list(workload.model.modules())
    assert not any(
        isinstance(m, (Conv1D, nn.Linear)) and not isinstance(m, QUANTISED_LINEAR) for m in modules
    )
    # 2 layers x (c_attn, attention c_proj, c_fc, mlp c_proj) + the LM head
    assert sum(isinstance(m, QUANTISED_LINEAR) for m in modules) == 2 * 4 + 1
    assert workload.facts().extra["conv1d_converted"] == 8
    metrics, tags = run(make_cfg, client, *overrides)
    assert tags[Tag.DTYPE] == DYNAMIC_INT8 and metrics["tokens_out"] == metrics["samples"] * 4


def test_conv1d_to_linear_computes_the_same_function():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64)
    ).eval()
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        before = model(ids).logits
        assert conv1d_to_linear(model) == 8
        after = model(ids).logits
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ([*tiny("gpt2"), *TEXT, "precision=int4"], "precision=int4 cannot run on cpu"),
        (["precision=int8"], "scikit-learn"),  # the default job: logistic regression on digits
        (["model=resnet-50", "model.weights=random", *IMAGES, "precision=int8"], "convolutions"),  # real size
    ],
)
def test_impossible_precisions_are_refused_before_loading(make_cfg, client, overrides, needle):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*overrides))
    assert needle in str(error.value) and "fp32" in str(error.value)
    assert no_runs(client)


def test_missing_kernel_is_refused_with_the_reason():
    # No dtype of the precision axis lacks a CPU kernel in torch 2.13 (fp16 and bf16 run); float8 shows the
    # refusal on a kernel that really is missing.
    with pytest.raises(ConfigError) as error:
        check_kernels("cpu", torch.float8_e4m3fn, "fp8", ["linear", "layer_norm"])
    assert "layer_norm" in str(error.value) and "precision=fp8" in str(error.value)
    check_kernels("cpu", torch.float16, "fp16", ["linear", "layer_norm", "softmax", "conv2d"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_precision_without_cuda_is_refused(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*tiny("gpt2"), *TEXT, "precision=fp16", "hardware.device=cuda"))
    assert "hardware.device=cuda" in str(error.value)
    assert no_runs(client)


# --- CUDA only: not run on the CPU-only CI machine ---------------------------------------------------


def needs_cuda(test):
    """Marked `cuda` (bench/gpu_check.sh runs `pytest -m cuda`) and skipped where there is none."""
    return pytest.mark.cuda(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test)
    )


@needs_cuda
@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_cuda_half_precision(make_cfg, client, precision, dtype):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        with pytest.raises(ConfigError, match="bfloat16"):
            run_job(make_cfg(*tiny("gpt2"), *TEXT, "precision=bf16", "hardware.device=cuda"))
        return
    metrics, tags = run(
        make_cfg, client, *tiny("gpt2"), *TEXT, f"precision={precision}", "hardware.device=cuda"
    )
    assert tags[Tag.DTYPE] == str(dtype) and tags[Tag.DEVICE] == "cuda:0"


@needs_cuda
def test_cuda_compiled_engine(make_cfg, client):
    metrics, _ = run(make_cfg, client, *tiny("gpt2"), *TEXT, "engine=compiled", "hardware.device=cuda")
    assert metrics["tokens_out"] == metrics["samples"] * 4


@needs_cuda
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_cuda_weight_only_quantisation_or_clear_refusal(make_cfg, client, precision):
    import importlib.util

    # int4 groups 128 input features: the smallest shapes its kernels take.
    shape = "{hidden_size:128,num_hidden_layers:2,num_attention_heads:2,ffn_dim:256,word_embed_proj_dim:128}"
    overrides = [
        "model=opt-125m",
        "model.weights=random",
        f"+model.config_overrides={shape}",
        *TEXT,
        f"precision={precision}",
        "hardware.device=cuda",
    ]
    if importlib.util.find_spec("torchao") is None:
        with pytest.raises(ConfigError, match="torchao"):
            run_job(make_cfg(*overrides))
        return
    _, tags = run(make_cfg, client, *overrides)
    held = re.match(rf"{precision} weight-only \(torchao, (\d+) of (\d+) linear layers\)", tags[Tag.DTYPE])
    assert held and 0 < int(held[1]) <= int(held[2]), tags[Tag.DTYPE]
