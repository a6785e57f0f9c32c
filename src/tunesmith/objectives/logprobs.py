"""Sequence log-probabilities and the reference model, shared by the preference objectives.

logp(y|x) = sum over response tokens (labels != -100) of log p(y_t | x, y_<t)  (ALGORITHMS.md: sums, not means).
The LM head and the log-softmax run only at response positions, in chunks of CHUNK positions, so at most one
chunk x vocab of fp32 logits exists: a frozen head (LoRA, the reference) computes each chunk's log-prob gradient
in forward, a trainable one recomputes the chunk's logits in backward (activation checkpointing).
Pairwise batches hold chosen rows first, then rejected rows, so one forward serves both (as in TRL's
`concatenated_forward`).

Reference (ALGORITHMS.md, DPO): with LoRA the same model with adapters disabled (no second copy), otherwise
a frozen deep copy taken before training; eval mode (dropout off), no grad, same dtype as the policy.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.checkpoint import checkpoint

from tunesmith.errors import TunesmithError
from tunesmith.data.pair_layout import ATTN_IMPLEMENTATIONS, attention_mask_4d
from tunesmith.objectives.base import backbone_and_head, needs_full_logits, unwrap
from tunesmith.objectives.sft import CEWorkspace, chunk_nll

IGNORE = -100
CHUNK = 1024  # response positions per LM-head chunk


def _token_logps(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(n,) log p(target_i) from (n, H) hidden states: fp32 log-softmax over one chunk's logits."""
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _FrozenHeadTokenLogps(torch.autograd.Function):
    """log p(target_i) through a frozen bias-free linear head, chunk by chunk in two reused buffers (CEWorkspace),
    with d logp_i / d h_i = (onehot(y_i) - softmax_i) W computed in forward: the upstream gradient of row i is a
    scalar (DPO weighs each token's log-prob by its sequence's loss gradient), so backward only scales row i.
    One head matmul less than recomputing the chunk in backward, and no fresh (n x V) buffers."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, compute_dtype: torch.dtype, grad: bool):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if grad else None
        w = weight.to(compute_dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(compute_dtype)
                y = targets[start : start + chunk]
                nll, g = chunk_nll(h, w, y, WORKSPACE, grad)
                out[start : start + chunk] = -nll
                if g is not None:  # d logp / d h = -(softmax - onehot) W
                    grad_h[start : start + chunk] = (g @ w).neg_().to(hidden.dtype)
        ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out[:, None].to(grad_h.dtype), None, None, None, None, None


WORKSPACE = CEWorkspace()  # shared by the policy and reference passes, which run one after the other


def chunked_token_logps(head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """_token_logps in chunks. A frozen bias-free linear head (LoRA, the reference) takes the fused path above;
    otherwise, with grad on, each chunk's logits are recomputed in backward instead of stored."""
    chunk = CHUNK if chunk is None else chunk
    if chunk > 0 and type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
        grad = torch.is_grad_enabled() and hidden.requires_grad
        return _FrozenHeadTokenLogps.apply(hidden, head.weight, targets, chunk, compute, grad)
    if chunk <= 0 or hidden.shape[0] <= chunk:
        return _token_logps(head, hidden, targets)
    grad = torch.is_grad_enabled()
    pieces = [checkpoint(_token_logps, head, hidden[s : s + chunk], targets[s : s + chunk], use_reentrant=False)
              if grad else _token_logps(head, hidden[s : s + chunk], targets[s : s + chunk])
              for s in range(0, hidden.shape[0], chunk)]
    return torch.cat(pieces)


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   shared: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) summed log-probs of the labelled tokens and (N,) how many there are, per row.

    `shared` (a pairwise batch's `data.pair_layout` keys): run the merged one-row-per-pair layout instead of
    the N rows, and read each row's states back through `shared_index`; same numbers, fewer tokens.
    """
    targets = labels[:, 1:]  # (N, T-1): token t is predicted at position t-1
    mask = targets != IGNORE
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]  # (M,)
    if shared is not None:
        inputs = {"input_ids": shared["shared_input_ids"], "position_ids": shared["shared_position_ids"],
                  "attention_mask": attention_mask_4d(shared["shared_mask"], attn_implementation(model))}
        unmerge = shared["shared_pair"][:, None], shared["shared_index"]  # (N, 1), (N, T) -> (N, T, ...) states
    else:
        inputs, unmerge = {"input_ids": input_ids, "attention_mask": attention_mask}, None
    if needs_full_logits(model):
        logits = model(**inputs).logits
        logits = logits[unmerge] if unmerge is not None else logits
        picked = _token_logps(torch.nn.Identity(), logits[:, :-1][mask], targets[mask])  # (M,)
    else:
        backbone, head = backbone_and_head(model)
        hidden = backbone(**inputs).last_hidden_state  # (N, T, H) or (B, W, H) merged
        hidden = hidden[unmerge] if unmerge is not None else hidden
        picked = chunked_token_logps(head, hidden[:, :-1][mask], targets[mask])  # (M,): response positions only
    sums = torch.zeros(targets.shape[0], dtype=picked.dtype, device=picked.device).index_add(0, rows, picked)
    return sums, mask.sum(dim=1)


def attn_implementation(model) -> str:
    return str(getattr(unwrap(model).config, "_attn_implementation", None) or "eager")


def shares_prefix(model, batch: dict) -> bool:
    """The merged layout is used when the batch carries it and the model's attention takes a 4D mask."""
    return "shared_index" in batch and attn_implementation(model) in ATTN_IMPLEMENTATIONS


def batch_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    shared = batch if shares_prefix(model, batch) else None
    return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"], shared)


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B,) -> chosen (B,), rejected (B,)."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


class AdapterDisabledReference:
    """π_ref = the policy with its LoRA adapters switched off (peft `disable_adapter`), in eval mode."""

    kind = "adapter_disabled"

    def __init__(self, model):
        if not hasattr(model, "disable_adapter"):
            raise TunesmithError("align.reference=adapter_disabled needs a LoRA run (method.kind: lora)")
        self.model = model

    @torch.no_grad()
    def logps(self, batch: dict, input_key: str = "input_ids") -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return _keyed_logps(self.model, batch, input_key)
        finally:
            self.model.train(was_training)


class FrozenCopyReference:
    """π_ref = a frozen deep copy of the policy as it was before training (same dtype), in eval mode."""

    kind = "copy"

    def __init__(self, model):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def logps(self, batch: dict, input_key: str = "input_ids") -> torch.Tensor:
        return _keyed_logps(self.model, batch, input_key)


def _keyed_logps(model, batch: dict, input_key: str) -> torch.Tensor:
    """Log-probs of the rows under `input_key` ('input_ids', or 'kl_input_ids' for KTO's mismatched rows)."""
    if input_key == "input_ids":
        return batch_logps(model, batch)[0]
    prefix = input_key[: -len("input_ids")]
    return sequence_logps(model, batch[input_key], batch[prefix + "attention_mask"], batch[prefix + "labels"])[0]


REFERENCES = {"adapter_disabled": AdapterDisabledReference, "copy": FrozenCopyReference}


def build_reference(model, mode: str, started_from_adapter: bool = False):
    """The reference for `mode`; 'auto' = adapters disabled for a fresh LoRA, else a frozen copy.

    A run that continues from a saved adapter (e.g. an SFT adapter) must use that adapter as its reference,
    which disabling adapters would lose, so 'auto' takes a frozen copy there. Call before loading a checkpoint.
    """
    if mode == "auto":
        mode = "adapter_disabled" if hasattr(model, "disable_adapter") and not started_from_adapter else "copy"
    if mode not in REFERENCES:
        raise TunesmithError(f"align.reference: unknown reference '{mode}' (auto, copy, adapter_disabled)")
    return REFERENCES[mode](model)
