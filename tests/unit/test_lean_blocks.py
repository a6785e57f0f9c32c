"""Lean block activations (models/lean_blocks.py): transformers' RMSNorm and SwiGLU forward bit for bit, the same
gradients, fewer bytes kept for backward; applied to the Llama family only, and only while gradients are recorded."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from tunesmith.models.lean_blocks import lean_block_ops, lean_mlp_forward, lean_rmsnorm_forward


def _saved_bytes(fn, module: nn.Module | None = None):
    """fn()'s output and the bytes autograd keeps for its backward, weights (and autocast's copies of them) aside."""
    weights = {s for p in (module.parameters() if module else ()) for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    storages: dict[int, int] = {}

    def pack(t):
        if tuple(t.shape) not in weights:
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


def _mlp_grads(mlp, forward, x, grad, autocast: bool):
    leaf = x.clone().requires_grad_()
    mlp.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, saved = _saved_bytes(lambda: forward(mlp, leaf), mlp)
    out.backward(grad)
    return out.detach(), leaf.grad, {n: p.grad for n, p in mlp.named_parameters() if p.grad is not None}, saved


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_swiglu_with_a_trainable_down_projection_keeps_gate_and_up_only(dtype):
    """Full fine-tuning's MLP: same output, the same gradients for every weight, two intermediate-wide tensors
    (silu(gate) and the down projection's input) no longer kept."""
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=160, hidden_act="silu")).to(dtype)
    x, grad = torch.randn(3, 11, 64, dtype=dtype), torch.randn(3, 11, 64, dtype=dtype)
    out_hf, gx_hf, gp_hf, saved_hf = _mlp_grads(mlp, type(mlp).forward, x, grad, autocast=False)
    out_ours, gx_ours, gp_ours, saved_ours = _mlp_grads(mlp, lean_mlp_forward, x, grad, autocast=False)
    assert torch.equal(out_ours, out_hf)
    assert gp_ours.keys() == gp_hf.keys() == {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}
    tolerance = 1e-6 if dtype == torch.float32 else 5e-3
    for name in gp_hf:
        assert _rel(gp_ours[name], gp_hf[name]) < tolerance, name
    assert _rel(gx_ours, gx_hf) < tolerance
    assert saved_hf - saved_ours == 2 * 3 * 11 * 160 * x.element_size()


def _lora_mlp(dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.fused_lora import fuse_lora_layers

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=160, hidden_act="silu")).to(torch.bfloat16)
    model = get_peft_model(nn.Sequential(mlp), LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout,
                                                          target_modules=["gate_proj", "up_proj", "down_proj"]))
    for p in model.parameters():
        if p.requires_grad:  # fp32 adapters, B non-zero (at init B = 0 would leave A without a gradient)
            p.data = torch.randn_like(p.data, dtype=torch.float32) * 0.1
    fuse_lora_layers(model)
    return model.base_model.model[0]


def test_swiglu_with_lora_on_the_down_projection_under_autocast():
    """LoRA SFT's MLP (bf16 base, fp32 adapters, bf16 autocast, fused LoRA forward): same output, adapter gradients
    as autograd's within bf16 rounding, frozen weights untouched, silu(gate) and the down input no longer kept."""
    mlp = _lora_mlp()
    torch.manual_seed(1)
    x, grad = torch.randn(3, 11, 64, dtype=torch.bfloat16), torch.randn(3, 11, 64, dtype=torch.bfloat16)
    out_hf, gx_hf, gp_hf, saved_hf = _mlp_grads(mlp, type(mlp).forward, x, grad, autocast=True)
    out_ours, gx_ours, gp_ours, saved_ours = _mlp_grads(mlp, lean_mlp_forward, x, grad, autocast=True)
    assert torch.equal(out_ours, out_hf)
    assert len(gp_hf) == 6 and gp_ours.keys() == gp_hf.keys() and all("lora_" in n for n in gp_hf)
    for name, g in gp_hf.items():
        assert gp_ours[name].dtype == torch.float32 and g.abs().sum() > 0
        assert _rel(gp_ours[name], g) < 1e-2, (name, _rel(gp_ours[name], g))
    assert _rel(gx_ours, gx_hf) < 1e-2
    assert saved_hf - saved_ours == 2 * 3 * 11 * 160 * 2


def test_down_projection_it_cannot_fold_in_keeps_its_own_forward():
    """LoRA dropout in training (or hooks on the module): the down projection runs its own forward and only
    silu(gate) is recomputed; the result is still the plain forward's."""
    from tunesmith.models.lean_blocks import _down_parts

    mlp = _lora_mlp(dropout=0.1)
    mlp.train()
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _down_parts(mlp.down_proj, x.requires_grad_()) is None
        torch.manual_seed(3)
        out_hf = type(mlp).forward(mlp, x)
        torch.manual_seed(3)
        out_ours = lean_mlp_forward(mlp, x)
    assert torch.equal(out_ours, out_hf)
    mlp.eval()  # dropout off: folds in again, unless the module carries hooks
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _down_parts(mlp.down_proj, x) is not None
        mlp.down_proj.register_forward_hook(lambda *_: None)
        assert _down_parts(mlp.down_proj, x) is None


def _tiny(model_type_config: dict | None = None) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, **(model_type_config or {}))
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("dtype,tolerance", [(torch.bfloat16, 0.02), (torch.float32, 1e-5)])
def test_whole_model_loss_and_gradients_match_and_eval_is_untouched(dtype, tolerance):
    """A LoRA model as training runs it (fused LoRA): bf16 base under autocast (gradients within bf16 rounding:
    the recomputed matmuls round in another order) and fp32 (gradients equal to fp32 rounding)."""
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.fused_lora import fuse_lora_layers

    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 19))
    plain = get_peft_model(_tiny().to(dtype), LoraConfig(r=4, target_modules="all-linear"))
    for p in plain.parameters():
        if p.requires_grad:
            p.data = p.data.float()
            p.data.normal_(0, 0.05)  # B = 0 at init would leave A without gradient
    fuse_lora_layers(plain)  # as training runs it: the down projection's LoRA folds into the lean MLP
    lean = copy.deepcopy(plain)
    assert lean_block_ops(lean) == 2 * 2 + 1 + 2  # two norms per block, the final norm, one MLP per block

    def step(model):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss_plain, grads_plain = step(plain)
    loss_lean, grads_lean = step(lean)
    assert torch.equal(loss_lean, loss_plain)  # forward values bit-identical through every block
    assert grads_plain.keys() == grads_lean.keys() and len(grads_plain) == 2 * 2 * 7
    for name, g in grads_plain.items():
        assert torch.isfinite(grads_lean[name]).all() and g.abs().sum() > 0, name
        assert _rel(grads_lean[name], g) < tolerance, (name, _rel(grads_lean[name], g))
    with torch.no_grad():  # evaluation / generation: the original forward, same logits
        assert torch.equal(lean(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_only_the_llama_family_formula_is_replaced():
    from transformers import GemmaConfig, GemmaForCausalLM

    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    assert lean_block_ops(gemma) == 0  # (1 + weight) norm and a GELU-tanh MLP: its own forward
    gelu = _tiny({"hidden_act": "gelu"})
    assert lean_block_ops(gelu) == 2 * 2 + 1  # the norms only: the MLP is not SiLU-gated


def _lean_forwards(model: nn.Module) -> int:
    return sum(getattr(m.__dict__.get("forward"), "__func__", None) in (lean_rmsnorm_forward, lean_mlp_forward)
               for m in model.modules())


@pytest.mark.parametrize("loader", ["tunesmith", "transformers"])
def test_lean_ops_survive_train_eval_switches_of_a_loaded_model(tmp_path, loader, monkeypatch):
    """transformers 5 loads models with Hub kernelization on (when `kernels` is installed) and re-kernelizes at every
    train()/eval() switch, which drops per-instance forwards: the lean norms used to stop after a run's first eval
    (and a run that precomputed its reference diverged from one that did not). Our loader turns it off, and so does
    lean_block_ops for a model loaded elsewhere."""
    from transformers import AutoModelForCausalLM

    from tunesmith.config.schema import ModelConfig
    from tunesmith.models.lean_blocks import _RMSNorm
    from tunesmith.models.load import load_model

    _tiny().save_pretrained(tmp_path)
    if loader == "tunesmith":
        model = load_model(ModelConfig(name_or_path=str(tmp_path), dtype="fp32"))
    else:
        model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    model.requires_grad_(True)
    assert lean_block_ops(model) == 7
    for mode in (False, True, False, True):  # evaluation during training, then back
        model.train(mode)
        assert _lean_forwards(model) == 7, mode
    assert not getattr(model, "use_kernels", False)
    calls = []
    original = _RMSNorm.forward

    def counting(ctx, *args):
        calls.append(1)
        return original(ctx, *args)

    monkeypatch.setattr(_RMSNorm, "forward", staticmethod(counting))
    model(input_ids=torch.randint(0, 300, (1, 9)), labels=torch.randint(0, 300, (1, 9))).loss.backward()
    assert len(calls) == 5  # every norm took the lean path after the switches
