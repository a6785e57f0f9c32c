"""4-bit bases for QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314).

The frozen base's linear layers are stored as bitsandbytes 4-bit weights: NormalFloat4 (or FP4) codes in
blocks of 64, each block scaled by its absmax; with double quantisation those fp32 absmax scales are
quantised again to 8 bits in blocks of 256 (~0.37 bit/param saved, paper sec. 3). Weights are dequantised
block by block to the compute dtype inside every matmul; LoRA adapters on top stay fp32 (via peft), and
the rest of the model (embeddings, norms, lm_head) stays in the compute dtype (`model.dtype`).

Quantisation is transformers' own bitsandbytes integration (`BitsAndBytesConfig`): the weights are
quantised while loading, so the full-precision copy never coexists with the whole 4-bit model.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from tunesmith.config.schema import QLoraConfig
from tunesmith.errors import TunesmithError


def require_bitsandbytes() -> None:
    """Raise a clear error when bitsandbytes is missing (method.kind: qlora needs it)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TunesmithError("method.kind: qlora needs bitsandbytes: pip install 'tunesmith[qlora]' "
                             "(bitsandbytes>=0.50)")


def bnb_config(cfg: QLoraConfig, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for a 4-bit base computing in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_kwargs(cfg: QLoraConfig, compute_dtype: torch.dtype, device: torch.device | None = None) -> dict[str, Any]:
    """Extra `from_pretrained` arguments that load the base quantised to 4-bit on `device` (model.device; bnb
    quantises a weight when it is placed, so the device is fixed while loading)."""
    require_bitsandbytes()
    return {"quantization_config": bnb_config(cfg, compute_dtype), "device_map": {"": str(device or "cpu")}}


def keep_weight_layout(model: nn.Module) -> nn.Module:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, `Linear4bit.forward` in eval mode without input grad rewrites the layer's packed
    weight in place into another layout (`_convert_weight_packed_for_cpu`) served by a different kernel: after
    the first in-training evaluation the run trains on other bytes, and the outputs no longer match the
    dequantised weights (measured on the tiny test model: logits off by 0.12 against exact on an AVX2 CPU, and a
    slower-falling loss). tunesmith trains and evaluates on the layout it quantised (tests/e2e/test_qlora.py)."""
    for module in quantized_linears(model).values():
        module.support_avx512bf16_for_cpu = False
    return model


def is_4bit_param(p: torch.Tensor) -> bool:
    """A packed bitsandbytes 4-bit weight (two 4-bit codes per uint8 byte)."""
    return type(p).__name__ == "Params4bit"


def logical_numel(p: torch.Tensor) -> int:
    """Weights a parameter stands for: a packed 4-bit tensor holds 2 per byte of storage."""
    return p.numel() * 2 * p.element_size() if is_4bit_param(p) else p.numel()


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """{name in the plain model: module} of the bitsandbytes 4-bit linear layers (not peft's wrappers of them)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return {}
    import bitsandbytes as bnb

    return {_base_name(name): m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def _base_name(name: str) -> str:
    """A module's name in the plain transformers model (peft adds 'base_model.model.' and '.base_layer')."""
    return name.removeprefix("base_model.model.").replace(".base_layer", "")


def is_quantized(model: nn.Module) -> bool:
    return any(is_4bit_param(p) for p in model.parameters())


def describe(model: nn.Module) -> str | None:
    """The base's quantisation in words, e.g. '4-bit nf4 base (double quant, 14 linear layers), compute fp32';
    None when `model` has no 4-bit layer."""
    layers = list(quantized_linears(model).values())
    states = [m.weight.quant_state for m in layers if m.weight.quant_state is not None]
    if not states:
        return None
    kinds = sorted({s.quant_type for s in states})
    nested = "double quant" if all(s.nested for s in states) else "single quant"
    compute = layers[0].compute_dtype or states[0].dtype
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute, str(compute))
    return f"4-bit {'/'.join(kinds)} base ({nested}, {len(states)} linear layers), compute {name}"


def packed_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every 4-bit layer's packed codes and block scales (with double quant: the 8-bit scale codes, their
    own fp32 scales and offset), to check that the base stays fixed."""
    out: dict[str, torch.Tensor] = {}
    for name, m in quantized_linears(model).items():
        out[f"{name}.weight"] = m.weight.data.detach().clone()
        state = m.weight.quant_state
        if state is not None:
            out[f"{name}.absmax"] = state.absmax.detach().clone()
            if state.nested:
                out[f"{name}.absmax2"] = state.state2.absmax.detach().clone()
                out[f"{name}.offset"] = state.offset.detach().clone()
    return out


def dequantized_copy(model: nn.Module, compute_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """{module name: its 4-bit weight dequantised to `compute_dtype`}: what the base computes with."""
    import bitsandbytes.functional as F

    return {name: F.dequantize_4bit(m.weight.data, m.weight.quant_state).to(compute_dtype)
            for name, m in quantized_linears(model).items()}
