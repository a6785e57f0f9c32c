"""The fused LoRA forward (models/fused_lora.py) computes what peft's does: outputs and adapter gradients match,
fp32 to 1e-6 and under bf16 autocast to bf16 rounding; the cases it must not take go through peft."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora.layer import Linear as LoraLinear

from tunesmith.config.schema import LoraConfig, MethodConfig
from tunesmith.models.adapters import apply_method
from tunesmith.models.fused_lora import _fusable, fuse_lora_layers, fused_forward


def _lora_model(tiny_model_dir, dtype=torch.float32, **lora):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    model = apply_method(model, MethodConfig(kind="lora", lora=LoraConfig(r=4, alpha=8, **lora)))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would hide a wrong adapter path
            p.data.normal_(0, 0.05)
    return model


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _ids():
    torch.manual_seed(0)
    return torch.randint(3, 500, (2, 11))


def test_fused_equals_peft_in_fp32(tiny_model_dir):
    peft_model = _lora_model(tiny_model_dir)
    fused = copy.deepcopy(peft_model)
    n_lora = sum(type(m) is LoraLinear for m in fused.modules())
    assert fuse_lora_layers(fused) == n_lora > 0
    ids = _ids()
    loss_p, grads_p = _loss_and_grads(peft_model, ids)
    loss_f, grads_f = _loss_and_grads(fused, ids)
    assert torch.allclose(loss_p, loss_f, atol=1e-6)
    assert grads_p.keys() == grads_f.keys() and any("lora_A" in n for n in grads_f)
    for name in grads_p:
        assert torch.allclose(grads_p[name], grads_f[name], atol=1e-6, rtol=1e-5), name


def test_fused_close_to_peft_under_bf16_autocast(tiny_model_dir):
    from tunesmith.objectives.sft import adapter_inputs_as_is

    peft_model = _lora_model(tiny_model_dir, dtype=torch.bfloat16)
    fused = copy.deepcopy(peft_model)
    fuse_lora_layers(fused)
    ids = _ids()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with adapter_inputs_as_is(peft_model):
            loss_p, grads_p = _loss_and_grads(peft_model, ids)
        loss_f, grads_f = _loss_and_grads(fused, ids)
    assert abs(float(loss_p) - float(loss_f)) < 2e-2 * float(loss_p)
    for name in grads_p:
        assert grads_f[name].dtype == torch.float32  # fp32 master adapter weights
        cos = torch.nn.functional.cosine_similarity(grads_p[name].flatten(), grads_f[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


def test_disabled_adapters_and_eval_take_the_right_path(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    fuse_lora_layers(model)
    ids = _ids()
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        adapted = model(input_ids=ids).logits
        plain = copy.deepcopy(model.get_base_model())
        for m in plain.modules():  # undo the adapters by hand: base layers only
            for name, child in list(m.named_children()):
                if type(child) is LoraLinear:
                    setattr(m, name, child.base_layer)
        assert torch.allclose(base, plain(input_ids=ids).logits, atol=1e-6)
    assert not torch.allclose(base, adapted, atol=1e-3)


@pytest.mark.parametrize("lora,expect", [({"dropout": 0.1}, None), ({"dora": True}, None), ({}, "default")])
def test_only_plain_adapters_fuse(tiny_model_dir, lora, expect):
    model = _lora_model(tiny_model_dir, **lora)
    model.train()
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    x = torch.randn(3, layer.base_layer.in_features)
    assert _fusable(layer, x, {}) == expect
    with torch.no_grad():  # and the output is peft's either way (same seed: same dropout mask on the fallback)
        torch.manual_seed(2)
        ours = fused_forward(layer, x)
        torch.manual_seed(2)
        assert torch.allclose(ours, type(layer).forward(layer, x), atol=1e-6)
    model.eval()  # dropout is off in eval mode, so the fused path is the same computation there
    assert (_fusable(layer, x, {}) is None) == bool(lora.get("dora"))
