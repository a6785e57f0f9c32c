"""Attention for bf16 training on CPU: PyTorch's flash-attention forward, and a backward made of batched matmuls.

PyTorch's CPU flash-attention backward is the slowest kernel of a bf16 LoRA step on small CPUs: on the 2-core
Sapphire Rapids bench box it took a quarter of the step (39 ms per layer for 8 rows x 126 tokens x 9 heads, 143 ms
at 512 tokens), far above its FLOPs, because it works tile by tile in fp32. Recomputing the probabilities as one
(rows·heads) x L x L bf16 matrix and doing the five products with oneDNN's bf16 (AMX/AVX-512) batched matmuls
takes 11 ms and 98 ms there (bench/README.md). The extra memory is that matrix and its gradient for a few batch
rows of one layer at a time (chunks of ~8 MB); what autograd keeps between forward and backward is what the flash
kernel keeps (q, k, v, output, log-sum-exp, mask), with grouped-query K and V kept at their own head count and
repeated per chunk in backward (transformers' `repeat_kv` before SDPA would keep the repeated copies: 3x the K/V
bytes on SmolLM2).

Precision. P = exp(S - lse) is formed by one matmul whose accumulator starts at -lse, so the logit is rounded to
bf16 once, after the subtraction, not before. lse itself is split: its bf16 part goes into that matmul and the
rest is a per-row factor c = exp(lse_bf16 - lse) folded into dO (dV = Pᵀ(c·dO), dS = P∘((c·dO)Vᵀ - c·D)), so rows
of P still sum to 1 in fp32. The gradients then match an fp32 reference within ~0.6% (relative norm), against
~0.3% for the flash kernel and ~0.4% for any bf16 matmul's input gradient.

Installed for the length of a training run (`attention_backward("matmul")`) as the "sdpa" attention function of
transformers; it handles only what it computes exactly like SDPA (CPU, bf16, gradients on, no dropout, no cache,
query and key of the same length) and hands every other call to transformers' own SDPA function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


_CHUNK_BYTES = 8 << 20  # one L x L bf16 matrix per chunk of batch rows: cache-sized, and little transient memory


class _FlashForwardMatmulBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, scale: float, causal: bool, groups: int):  # q: (B, H, L, D), k, v: (B, H/groups, L, D)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, _repeat_heads(k, groups), _repeat_heads(v, groups), 0.0, causal, attn_mask=mask, scale=scale)[:2]
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.scale, ctx.causal, ctx.groups = scale, causal, groups
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, mask = ctx.saved_tensors
        b, h, lq, d = q.shape
        lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # fully masked rows: P = 0, no NaN
        hi = lse.to(q.dtype)
        c = torch.exp(hi.float() - lse).unsqueeze(-1)  # true P = exp(S - hi) * c
        g = grad_out.float()
        d_row = (g * out.float()).sum(-1, keepdim=True).mul_(c).to(q.dtype)  # c · rowsum(dO ∘ O)
        gc = (g * c).to(q.dtype)
        del g
        causal = (torch.ones(lq, k.shape[2], dtype=torch.bool, device=q.device).triu_(1) if ctx.causal else None)
        step = max(1, _CHUNK_BYTES // (h * lq * k.shape[2] * q.element_size()))  # batch rows per L x L chunk
        args = (causal, ctx.scale, ctx.groups)
        if step >= b:  # one chunk (most batches): its gradients are the answer, no copy
            return (*_backward_rows(q, k, v, gc, hi, d_row, mask, *args), None, None, None, None)
        grads = [torch.empty_like(t) for t in (q, k, v)]
        for i in range(0, b, step):
            rows = slice(i, i + step)
            chunk_mask = None if mask is None else mask[rows] if mask.shape[0] > 1 else mask
            parts = _backward_rows(q[rows], k[rows], v[rows], gc[rows], hi[rows], d_row[rows], chunk_mask, *args)
            for grad, part in zip(grads, parts):
                grad[rows] = part
        return (*grads, None, None, None, None)


def _repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, KV, L, D) -> (B, KV·groups, L, D), each KV head repeated `groups` times in a row (transformers' repeat_kv)."""
    if groups == 1:
        return x
    b, kv, length, d = x.shape
    return x[:, :, None].expand(b, kv, groups, length, d).reshape(b, kv * groups, length, d)


def _backward_rows(q, k, v, gc, hi, d_row, mask, causal, scale: float, groups: int):
    """dQ, dK, dV for a few batch rows: P = exp(S - hi) (c already folded into gc and d_row), five matmuls; K and V
    come in with their own head count, their gradients go out summed over the query heads that shared them."""
    kv_heads = k.shape[1]
    k, v = _repeat_heads(k, groups), _repeat_heads(v, groups)
    (b, h, lq, d), lk = q.shape, k.shape[2]
    q3, k3, v3 = q.reshape(b * h, lq, d), k.reshape(b * h, lk, d), v.reshape(b * h, lk, d)
    gc3 = gc.reshape(b * h, lq, d)
    p = torch.baddbmm(hi.reshape(b * h, lq, 1).neg(), q3, k3.transpose(1, 2), alpha=scale)  # S - hi
    if mask is not None:
        p.view(b, h, lq, lk).add_(mask)
    if causal is not None:
        p.masked_fill_(causal, float("-inf"))
    p.exp_()
    dv = torch.bmm(p.transpose(1, 2), gc3)
    ds = torch.baddbmm(d_row.reshape(b * h, lq, 1).neg(), gc3, v3.transpose(1, 2)).mul_(p)  # P ∘ (dP - D)
    del p
    dq = torch.bmm(ds, k3).mul_(scale)
    dk = torch.bmm(ds.transpose(1, 2), q3).mul_(scale)
    if groups > 1:
        return dq.view(b, h, lq, d), *(g.view(b, kv_heads, groups, lk, d).sum(2) for g in (dk, dv))
    return dq.view(b, h, lq, d), dk.view(b, h, lk, d), dv.view(b, h, lk, d)


class _AdditiveMask:
    """The additive form (query dtype) of transformers' mask, made once per forward (every layer gets the same
    mask tensor) instead of once per layer; holds only the latest one."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.additive: torch.Tensor | None = None

    def __call__(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if mask.dtype == dtype:
            return mask
        if self.source is not mask or self.additive is None or self.additive.dtype != dtype:
            self.source = mask
            self.additive = (torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
                             if mask.dtype == torch.bool else mask.to(dtype))
        return self.additive


def _handles(query: torch.Tensor, key: torch.Tensor, dropout: float, kwargs: dict) -> bool:
    return (query.device.type == "cpu" and query.dtype == torch.bfloat16 and torch.is_grad_enabled()
            and (query.requires_grad or key.requires_grad) and not dropout and query.shape[2] == key.shape[2] > 1
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and not kwargs.get("output_attentions", False))


def make_attention_function(fallback, additive: _AdditiveMask):
    """An attention function with transformers' signature: ours where `_handles` says so, else `fallback`."""
    def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs):
        if not _handles(query, key, dropout, kwargs):
            return fallback(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                            is_causal=is_causal, **kwargs)
        groups = query.shape[1] // key.shape[1]
        causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        mask = None if attention_mask is None else additive(attention_mask, query.dtype)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = _FlashForwardMatmulBackward.apply(query, key, value, mask, scale, bool(causal), groups)
        return out.transpose(1, 2).contiguous(), None

    return attention


@contextlib.contextmanager
def attention_backward(kind: str = "matmul") -> Iterator[None]:
    """For the block's duration, transformers' "sdpa" attention takes the matmul backward where it applies
    (`kind="matmul"`); `kind="sdpa"` leaves PyTorch's kernel in place."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if kind != "matmul":
        yield
        return
    had_local = "sdpa" in ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = ALL_ATTENTION_FUNCTIONS["sdpa"]
    ALL_ATTENTION_FUNCTIONS["sdpa"] = make_attention_function(previous, _AdditiveMask())
    try:
        yield
    finally:
        if had_local:
            ALL_ATTENTION_FUNCTIONS["sdpa"] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS["sdpa"]
