"""model.dtype 'auto': bf16 only where the hardware runs it natively, fp32 elsewhere (an AVX2-only CPU emulates bf16)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tunesmith.config.schema import ModelConfig
from tunesmith.errors import TunesmithError
from tunesmith.models import load as load_module
from tunesmith.models.load import dtype_name, fast_bf16, load_model, resolve_dtype
from tunesmith.training.loop import autocast_context


def _cpu_flags(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (False, False, torch.float32),   # AVX2-only: bf16 is emulated, ~5-80x slower than fp32
    (False, True, torch.bfloat16),   # e.g. Zen 4 EPYC, Cooper Lake
    (True, False, torch.bfloat16),   # Sapphire Rapids AMX
])
def test_auto_follows_native_bf16(monkeypatch, amx, avx512_bf16, expected):
    _cpu_flags(monkeypatch, amx, avx512_bf16)
    assert fast_bf16("cpu") is (expected == torch.bfloat16)
    assert resolve_dtype("auto") == expected
    assert dtype_name("auto") == ("bf16" if expected == torch.bfloat16 else "fp32")


def test_explicit_names_win_over_the_hardware(monkeypatch):
    _cpu_flags(monkeypatch, False, False)
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("fp32") == torch.float32
    with pytest.raises(TunesmithError, match="dtype must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_dtype("fp16")


def test_auto_is_the_default_everywhere():
    from tunesmith.evaluation.config import ModelSpec

    assert ModelConfig().dtype == "auto"
    assert ModelSpec(name="m", model="x").dtype == "auto"


def test_auto_without_native_bf16_loads_fp32_and_runs_without_autocast(monkeypatch, tiny_model_dir):
    _cpu_flags(monkeypatch, False, False)
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="auto"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert isinstance(autocast_context(model), contextlib.nullcontext)
    _cpu_flags(monkeypatch, True, False)
    bf16 = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="auto"))
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert isinstance(autocast_context(bf16), torch.autocast)


@pytest.mark.parametrize(("dtype", "mixed", "amp"), [("bf16", True, True), ("fp32", True, False), ("bf16", False, False)])
def test_full_fine_tuning_keeps_fp32_masters_and_mixed_precision_is_opt_in(tiny_model_dir, dtype, mixed, amp):
    """method full: every weight trains in fp32 and computes in fp32, even when loaded in bf16; with
    method.mixed_precision a model loaded in bf16 runs under bf16 autocast (bf16 matmuls). The loss matches the
    fp32 one within bf16 rounding, and the fp32 masters move."""
    from tunesmith.config.schema import MethodConfig
    from tunesmith.models.adapters import apply_method, compute_dtype

    ids = torch.randint(3, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    losses = {}
    for name, method in ((dtype, MethodConfig(kind="full", mixed_precision=mixed)), ("fp32", MethodConfig(kind="full"))):
        model = apply_method(load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype=name)), method)
        assert {p.dtype for p in model.parameters()} == {torch.float32} and all(p.requires_grad for p in model.parameters())
        on = amp and method.mixed_precision
        assert compute_dtype(model) == (torch.bfloat16 if on else torch.float32)
        context = autocast_context(model)
        assert isinstance(context, torch.autocast if on else contextlib.nullcontext)
        before = model.lm_head.weight.detach().clone()
        with context:
            out = model(input_ids=ids, labels=ids)
            assert out.logits.dtype == (torch.bfloat16 if on else torch.float32)
        out.loss.backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert model.lm_head.weight.dtype == torch.float32 and not torch.equal(model.lm_head.weight, before)
        losses[on] = out.loss.item()
    assert losses[amp] == pytest.approx(losses[False], rel=2e-2)


def test_mixed_precision_is_refused_for_adapters(tiny_model_dir):
    from tunesmith.config.schema import MethodConfig
    from tunesmith.models.adapters import apply_method

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="bf16"))
    with pytest.raises(TunesmithError, match="method.mixed_precision applies to kind full only"):
        apply_method(model, MethodConfig(kind="lora", mixed_precision=True))


def test_cuda_auto_needs_bf16_support(monkeypatch):
    monkeypatch.setattr(load_module.torch.cuda, "is_available", lambda: False)
    assert fast_bf16("cuda") is False


# model.device: where training and generation run. CI has no GPU, so the CUDA branches are checked as refusals.


def test_device_auto_is_the_cpu_without_a_gpu(monkeypatch, tiny_model_dir):
    from tunesmith.models.load import resolve_device

    monkeypatch.setattr(load_module.torch.cuda, "is_available", lambda: False)
    assert ModelConfig().device == "auto" and resolve_device("auto") == torch.device("cpu")
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="auto"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert dtype_name("auto") == dtype_name("auto", "cpu")  # keys of caches follow auto's device


def test_device_cuda_without_a_gpu_is_a_clear_error(monkeypatch, tiny_model_dir):
    from tunesmith.models.load import resolve_device

    monkeypatch.setattr(load_module.torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(TunesmithError, match=f"model.device={name}: torch sees no CUDA GPU"):
            resolve_device(name)
    with pytest.raises(TunesmithError, match="model.device=cuda"):
        load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cuda"))
    with pytest.raises(TunesmithError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_device_names_are_checked_by_the_config():
    from pydantic import ValidationError

    assert ModelConfig(device="cuda:1").device == "cuda:1"
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(ValidationError, match="device"):
            ModelConfig(device=bad)
