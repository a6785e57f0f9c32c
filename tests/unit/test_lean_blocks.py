"""Lean block activations (models/lean_blocks.py): transformers' RMSNorm and SwiGLU forward bit for bit, the same
gradients, fewer bytes kept for backward; applied to the Llama family only, and only while gradients are recorded."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from tunesmith.models.lean_blocks import lean_block_ops, lean_mlp_forward, lean_rmsnorm_forward


def _saved_bytes(fn) -> int:
    storages: dict[int, int] = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("dtype,trainable_weight", [(torch.bfloat16, False), (torch.float32, True), (torch.bfloat16, True)])
def test_rmsnorm_same_forward_same_gradients_half_the_saved_bytes(dtype, trainable_weight):
    torch.manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-6).to(dtype)
    norm.weight.data = (1 + 0.3 * torch.randn(96)).to(dtype)
    norm.weight.requires_grad_(trainable_weight)
    x = (3 * torch.randn(4, 7, 96)).to(dtype)
    grad = torch.randn(4, 7, 96).to(dtype)

    def run(forward):
        leaf = x.clone().requires_grad_()
        norm.weight.grad = None
        out, saved = _saved_bytes(lambda: forward(norm, leaf))
        out.backward(grad)
        return out.detach(), leaf.grad, norm.weight.grad, saved

    out_hf, gx_hf, gw_hf, saved_hf = run(type(norm).forward)
    out_ours, gx_ours, gw_ours, saved_ours = run(lean_rmsnorm_forward)
    assert torch.equal(out_ours, out_hf)  # transformers' ops in its order
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # fp32: rounding of the closed form; bf16: one ulp here and there
    assert _rel(gx_ours, gx_hf) < tolerance, _rel(gx_ours, gx_hf)
    if trainable_weight:
        assert _rel(gw_ours, gw_hf) < tolerance
    else:
        assert gw_ours is None and gw_hf is None
    element = x.element_size()
    tokens = x.numel() // 96
    # transformers keeps the fp32 input (and with a trainable weight the normalised values it multiplies);
    # ours the input as it came plus 1/rms per token
    assert saved_hf >= x.numel() * (4 + (element if trainable_weight else 0))
    assert saved_ours <= x.numel() * element + tokens * 4 + 96 * 4


def test_swiglu_same_forward_bit_identical_gradients_one_tensor_less():
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=160, hidden_act="silu")
    mlp = LlamaMLP(config).to(torch.bfloat16)
    x = torch.randn(3, 11, 64, dtype=torch.bfloat16)
    grad = torch.randn(3, 11, 64, dtype=torch.bfloat16)

    def run(forward):
        leaf = x.clone().requires_grad_()
        mlp.zero_grad(set_to_none=True)
        out, saved = _saved_bytes(lambda: forward(mlp, leaf))
        out.backward(grad)
        return out.detach(), leaf.grad, {n: p.grad for n, p in mlp.named_parameters()}, saved

    out_hf, gx_hf, gp_hf, saved_hf = run(type(mlp).forward)
    out_ours, gx_ours, gp_ours, saved_ours = run(lean_mlp_forward)
    assert torch.equal(out_ours, out_hf)
    assert torch.equal(gx_ours, gx_hf)  # autograd's own silu_backward on the same tensors
    assert all(torch.equal(gp_ours[n], gp_hf[n]) for n in gp_hf)
    assert saved_hf - saved_ours == 3 * 11 * 160 * 2  # silu(gate) is no longer kept


def _tiny(model_type_config: dict | None = None) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, **(model_type_config or {}))
    return LlamaForCausalLM(config)


def test_whole_model_loss_and_gradients_match_under_bf16_autocast_and_eval_is_untouched():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 19))
    plain = get_peft_model(_tiny().to(torch.bfloat16), LoraConfig(r=4, target_modules="all-linear"))
    for p in plain.parameters():
        if p.requires_grad:
            p.data = p.data.float()
            p.data.normal_(0, 0.05)  # B = 0 at init would leave A without gradient
    lean = copy.deepcopy(plain)
    assert lean_block_ops(lean) == 2 * 2 + 1 + 2  # two norms per block, the final norm, one MLP per block

    def step(model):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss_plain, grads_plain = step(plain)
    loss_lean, grads_lean = step(lean)
    assert torch.equal(loss_lean, loss_plain)  # forward values bit-identical through every block
    assert grads_plain.keys() == grads_lean.keys() and len(grads_plain) == 2 * 2 * 7
    for name, g in grads_plain.items():
        assert torch.isfinite(grads_lean[name]).all() and g.abs().sum() > 0, name
        assert _rel(grads_lean[name], g) < 0.02, (name, _rel(grads_lean[name], g))
    with torch.no_grad():  # evaluation / generation: the original forward, same logits
        assert torch.equal(lean(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_only_the_llama_family_formula_is_replaced():
    from transformers import GemmaConfig, GemmaForCausalLM

    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    assert lean_block_ops(gemma) == 0  # (1 + weight) norm and a GELU-tanh MLP: its own forward
    gelu = _tiny({"hidden_act": "gelu"})
    assert lean_block_ops(gelu) == 2 * 2 + 1  # the norms only: the MLP is not SiLU-gated
