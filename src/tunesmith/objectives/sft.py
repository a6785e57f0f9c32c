"""Supervised fine-tuning: next-token cross-entropy on supervised (label != -100) tokens only.

The LM head runs only at supervised positions, so the (positions x vocab) logits of masked prompt
tokens are never built (ALGORITHMS.md, SFT). It runs in chunks of `chunk_size` positions whose
gradients are computed during the forward pass (the "fused linear cross-entropy" of Liger-Kernel,
Hsu et al. 2024), so full fp32 logits never exist: peak extra memory is one chunk x vocab.
The loss is a sum; the loop normalises it by the supervised tokens of the whole accumulation window.

Packed batches (several documents per row, see `data.packing`) carry `position_ids` restarting at 0
per document and no attention mask; transformers then builds a block-diagonal causal mask from the
position ids, so attention never crosses documents.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from tunesmith.objectives.base import LossOutput, backbone_and_head, needs_full_logits

IGNORE = -100
DEFAULT_CHUNK = 1024


class CEWorkspace:
    """The LM head chunk's two (rows x vocab) buffers, kept between calls: a fresh 100-300 MB buffer per chunk
    costs a page fault per 4 KB (~370k faults, ~0.3 s, per 1,500 positions of a 49k vocabulary), a reused one none.
    Grows to the largest chunk seen; sits inside the peak anyway (the head runs at the end of forward)."""

    def __init__(self):
        self.low: torch.Tensor | None = None  # logits / softmax gradient in the compute dtype
        self.high: torch.Tensor | None = None  # fp32 logits -> softmax in place

    def get(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low
        stale = low is None or low.shape[0] < rows or low.shape[1] != vocab or low.dtype != dtype or low.device != device
        if stale or (low.is_inference() and not torch.is_inference_mode_enabled()):  # made under inference_mode: read-only now
            self.low = self.high = None  # free before allocating the larger pair
            self.low = torch.empty(rows, vocab, dtype=dtype, device=device)
            self.high = self.low if dtype == torch.float32 else torch.empty(rows, vocab, dtype=torch.float32, device=device)
        return self.low[:rows], self.high[:rows]

    def release(self) -> None:
        """Free both buffers (~300 MB at chunk 1024 on a 49k vocabulary); the next call allocates them again."""
        self.low = self.high = None


def chunk_nll(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, workspace: CEWorkspace, grad: bool
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of the LM head: (n,) -log p(y_i) in fp32 and, with `grad`, g = softmax - onehot(y) = dNLL/dlogits
    in the compute dtype (a view of the workspace, valid until its next use). Logits, their fp32 copy and the
    softmax built in place there (one exp pass) live in the workspace's two buffers; call with autocast off."""
    low, logits = workspace.get(h.shape[0], w.shape[0], h.dtype, h.device)
    torch.mm(h, w.T, out=low)
    if logits is not low:
        logits.copy_(low)  # (n, V) fp32: the only logits alive at any time
    picked = logits.gather(1, y[:, None]).squeeze(1)
    top = logits.amax(dim=1, keepdim=True)
    sums = logits.sub_(top).exp_().sum(dim=1, keepdim=True)  # softmax numerators, in place
    nll = top.squeeze(1) + sums.squeeze(1).log() - picked  # logsumexp - target logit
    if not grad:
        return nll, None
    g = logits.div_(sums)  # softmax
    g[torch.arange(len(y), device=g.device), y] -= 1.0
    return nll, (low.copy_(g) if low is not logits else g)


class _ChunkedLinearCE(torch.autograd.Function):
    """sum_i CE(hidden_i @ W^T, target_i) with dL/dhidden and dL/dW computed chunk by chunk in forward.

    CE gradient w.r.t. logits is softmax(z) - onehot(y); it is turned into dL/dh = g W and dL/dW = g^T h
    per chunk (chunk_nll, in the reused CEWorkspace buffers). Backward only scales the stored gradients.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, compute_dtype: torch.dtype, grad: bool,
                workspace: CEWorkspace | None = None):
        need_h, need_w = grad and hidden.requires_grad, grad and weight.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        w = weight.to(compute_dtype)
        workspace = workspace or CEWorkspace()
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start : start + chunk_size].to(compute_dtype)  # (n, H)
                y = targets[start : start + chunk_size]  # (n,)
                nll, g = chunk_nll(h, w, y, workspace, need_h or need_w)
                total += nll.sum()
                if need_h:
                    grad_h[start : start + chunk_size] = (g @ w).to(hidden.dtype)
                if need_w:
                    grad_w += g.T @ h
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return dh, dw, None, None, None, None, None


def chunked_ce_sum(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk_size: int = DEFAULT_CHUNK,
                   workspace: CEWorkspace | None = None) -> torch.Tensor:
    """Summed CE of `head(hidden)` against `targets` without materialising all logits.

    hidden (N, H), targets (N,). A plain bias-free `nn.Linear` head takes the fused path; any other head
    (bias, adapter-wrapped) falls back to per-chunk recomputation via activation checkpointing.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    if type(head) is torch.nn.Linear and head.bias is None:
        compute = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else head.weight.dtype
        return _ChunkedLinearCE.apply(hidden, head.weight, targets, chunk_size, compute, torch.is_grad_enabled(), workspace)
    from torch.utils.checkpoint import checkpoint

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

    return sum(checkpoint(piece, hidden[s : s + chunk_size], targets[s : s + chunk_size], use_reentrant=False)
               for s in range(0, hidden.shape[0], chunk_size))


def supervised_ce_sum(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    workspace: CEWorkspace | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed next-token CE over supervised positions, and how many there were.

    With `position_ids` (a packed batch) the attention mask is not passed, so the model derives the
    per-document block-diagonal mask from the restarting positions.
    """
    targets = labels[:, 1:]  # (B, T-1): token t is predicted from position t-1
    mask = targets != IGNORE
    count = int(mask.sum())
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs = {"input_ids": input_ids, "position_ids": position_ids}
    if needs_full_logits(model):
        logits = model(**inputs).logits[:, :-1]
        return F.cross_entropy(logits[mask].float(), targets[mask], reduction="sum"), count
    backbone, head = backbone_and_head(model)
    hidden = backbone(**inputs).last_hidden_state  # (B, T, H)
    selected = hidden[:, :-1][mask]  # (N, H): only positions that predict a supervised token
    if chunk_size <= 0:
        return F.cross_entropy(head(selected).float(), targets[mask], reduction="sum"), count
    return chunked_ce_sum(selected, head, targets[mask], chunk_size, workspace), count


def adapter_inputs_as_is(model) -> contextlib.AbstractContextManager:
    """Under autocast, LoRA layers take their (bf16) input as is instead of upcasting it to their fp32 weight's
    dtype, which autocast then casts back to bf16: the values are identical, but each adapter saved its own
    bf16 copy for backward (~25% of activation memory with all-linear LoRA). Without autocast: no change."""
    device = next(model.parameters()).device.type
    if not (hasattr(model, "peft_config") and torch.is_autocast_enabled(device)):
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)


class SFTObjective:
    """Cross-entropy on supervised tokens; weight = supervised tokens."""

    batch_kind = "sft"
    needs_reference = False

    def __init__(self, chunk_size: int = DEFAULT_CHUNK):
        self.chunk_size = chunk_size
        self.workspace = CEWorkspace()  # the LM head chunk's buffers, reused step after step

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_target_tokens"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        with adapter_inputs_as_is(model):
            loss, count = supervised_ce_sum(model, batch["input_ids"], batch.get("attention_mask"), batch["labels"],
                                            batch.get("position_ids"), self.chunk_size, self.workspace)
        return LossOutput(loss=loss, weight=float(count), metrics={"loss": loss.detach().item()})
