"""QLoRA parts on a tiny real Llama: the 4-bit base (bitsandbytes), LoRA on top, the report, config errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("bitsandbytes")

import bitsandbytes as bnb  # noqa: E402

from tests.conftest import build_tiny_model  # noqa: E402
from tunesmith.config.load import load_config  # noqa: E402
from tunesmith.config.schema import LoraConfig, MethodConfig, ModelConfig, QLoraConfig  # noqa: E402
from tunesmith.errors import TunesmithError  # noqa: E402
from tunesmith.models.adapters import apply_method, format_trainable_report, trainable_report  # noqa: E402
from tunesmith.models.load import load_model  # noqa: E402
from tunesmith.models.quantize import dequantized_copy, describe, quantized_linears  # noqa: E402

IDS = torch.tensor([[1, 105, 2230, 314, 2, 7, 9, 2, 640, 88, 31, 5]])
QLORA = MethodConfig(kind="qlora", lora=LoraConfig(r=8, alpha=16))


def load_4bit(folder, dtype: str = "fp32", **qlora):
    return load_model(ModelConfig(name_or_path=str(folder), dtype=dtype), QLoraConfig(**qlora))


def load_plain(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


@pytest.mark.parametrize("quant_type, double", [("nf4", True), ("fp4", False)])
def test_linear_layers_are_bnb_4bit_and_the_rest_keeps_the_compute_dtype(tiny_model_dir, quant_type, double):
    model = load_4bit(tiny_model_dir, quant_type=quant_type, double_quant=double)
    plain = load_plain(tiny_model_dir)
    linears = {n for n, m in plain.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    layers = quantized_linears(model)
    assert set(layers) == linears and len(layers) == 14
    for name, layer in layers.items():
        w = layer.weight
        assert isinstance(layer, bnb.nn.Linear4bit) and isinstance(w, bnb.nn.Params4bit) and w.dtype == torch.uint8
        assert w.quant_type == quant_type and w.compress_statistics is double and w.quant_state.nested is double
        assert w.quant_state.blocksize == 64
        assert w.numel() * 2 == plain.get_submodule(name).weight.numel()  # two 4-bit codes per byte
        assert layer.compute_dtype == torch.float32
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)  # lm_head (tied to the embeddings) stays unquantised
    others = [p for p in model.parameters() if p.dtype != torch.uint8]
    assert others and all(p.dtype == torch.float32 for p in others)  # embeddings, norms: the compute dtype


def test_bf16_compute_dtype_follows_model_dtype(tiny_model_dir):
    model = load_4bit(tiny_model_dir, dtype="bf16")
    assert all(m.compute_dtype == torch.bfloat16 for m in quantized_linears(model).values())
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16 and model.model.norm.weight.dtype == torch.bfloat16
    assert describe(model).endswith("compute bf16")
    from tunesmith.training.loop import autocast_context

    model = apply_method(model, QLORA)
    with autocast_context(model):  # the loop's bf16 autocast (embeddings are bf16)
        loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert torch.isfinite(loss)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in lora_b)


def test_4bit_base_computes_with_its_dequantised_weights_and_stays_near_fp32(tmp_path, tokenizer):
    """NF4 rounds Gaussian weights with ~9% relative RMS error (16 levels per 64-weight absmax block); on a model
    of realistic weight scale (init std 0.02) the logits move by about as much, no more."""
    folder = build_tiny_model(tmp_path / "m", tokenizer, init_std=0.02)
    model, plain = load_4bit(folder).eval(), load_plain(folder).eval()
    deq = dequantized_copy(model)
    err = sum((w - plain.get_submodule(n).weight).pow(2).sum() for n, w in deq.items()).sqrt()
    weight_rel = (err / sum(plain.get_submodule(n).weight.pow(2).sum() for n in deq).sqrt()).item()
    assert 0.05 < weight_rel < 0.12  # measured 0.092
    with torch.no_grad():
        q_logits, fp_logits = model(input_ids=IDS).logits, plain(input_ids=IDS).logits
        for name, weight in deq.items():
            plain.get_submodule(name).weight.copy_(weight)
        deq_logits = plain(input_ids=IDS).logits
    assert torch.allclose(q_logits, deq_logits, atol=1e-5)  # the 4-bit layer is its dequantised weight, exactly
    rel = ((q_logits - fp_logits).norm() / fp_logits.norm()).item()
    assert 0 < rel < 1.5 * weight_rel  # measured 0.092


def test_eval_forward_keeps_the_4bit_layout_it_trains_on(tiny_model_dir, monkeypatch):
    """bitsandbytes repacks a 4-bit weight in place for its CPU inference kernel on an eval, no-grad forward where the
    CPU has AVX512-BF16; tunesmith turns that off so evaluation never changes the bytes training uses. The
    hardware flag is forced on so the check means the same on every CI machine."""
    from tunesmith.models.quantize import packed_state

    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: True)
    model = load_4bit(tiny_model_dir).eval()
    layers = quantized_linears(model)
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers.values())
    before = packed_state(model)
    with torch.no_grad():
        model(input_ids=IDS)
    after = packed_state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers.values())


def test_qlora_trains_only_fp32_lora_and_the_report_says_4bit(tiny_model_dir):
    model = apply_method(load_4bit(tiny_model_dir), QLORA)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    report = trainable_report(model)
    plain_total = sum(p.numel() for p in load_plain(tiny_model_dir).parameters())
    assert report["total"] == plain_total + report["trainable"]  # packed 4-bit weights count what they stand for
    assert report["dtypes"]["nf4"] == sum(m.in_features * m.out_features for m in quantized_linears(model).values())
    line = format_trainable_report(report)
    assert "qlora r=8 on 14 modules; 4-bit nf4 base (double quant, 14 linear layers), compute fp32" in line
    out = model(input_ids=IDS, labels=IDS)
    out.loss.backward()
    assert all(p.grad is not None for n, p in trainable.items() if "lora_A" in n or "lora_B" in n)


def test_qlora_needs_a_quantised_base(tiny_model_dir):
    with pytest.raises(TunesmithError, match="method.kind: qlora needs a 4-bit base"):
        apply_method(load_plain(tiny_model_dir), QLORA)


def test_gradient_checkpointing_gives_the_same_lora_gradients(tiny_model_dir):
    """Checkpointing is train.gradient_checkpointing's choice (not forced): with the frozen 4-bit base and a frozen
    embedding, gradients still reach the LoRA weights, and equal those without checkpointing."""
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = apply_method(load_4bit(tiny_model_dir), QLORA)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)  # B = 0 at init would give lora_A no gradient
        assert not model.get_base_model().is_gradient_checkpointing
        if checkpointing:
            model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
        model.train()
        model(input_ids=IDS, labels=IDS).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_qlora_config_defaults_and_errors():
    cfg = load_config(None, ["method.kind=qlora"])
    assert cfg.method.kind == "qlora" and cfg.method.qlora.quant_type == "nf4" and cfg.method.qlora.double_quant
    with pytest.raises(TunesmithError) as info:
        load_config(None, ["method.qlora.quant_typ=fp4"])
    assert "method.qlora.quant_typ: unknown key — did you mean 'method.qlora.quant_type'?" in str(info.value)
    with pytest.raises(TunesmithError) as info:
        load_config(None, ["method.qlora.quant_type=int8"])
    assert "method.qlora.quant_type: Input should be 'nf4' or 'fp4' (got 'int8')" in str(info.value)


def test_missing_bitsandbytes_is_a_clear_error(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(TunesmithError, match=r"qlora needs bitsandbytes: pip install 'tunesmith\[qlora\]'"):
        load_4bit(tiny_model_dir)
