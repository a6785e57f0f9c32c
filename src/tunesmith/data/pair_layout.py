"""Shared-prefix layout of a pairwise batch: each pair as ONE row that holds the common prefix once.

A chosen and a rejected answer to the same prompt start with the same tokens (the whole prompt, often the
first part of the answer too), and a causal model's hidden states on a prefix do not depend on what follows
it. So instead of 2B padded rows, pair b becomes one row

    [ chosen tokens 0..len_c-1 | rejected tokens p..len_r-1 ]      p = first token where the two differ

whose rejected tail keeps its own positions (p, p+1, ...) and attends only to the shared prefix and to
itself (a 4D mask), which gives every token the hidden state it has in its own row. `shared_index` maps
each token of the 2B original rows to its place in the merged rows, so the objectives read log-probs
exactly as before. A row only needs its tokens up to the one before its last label (no log-prob depends on
later ones), so with `align.rejected_tokens: to_divergence` the rejected tail is empty or one token and a
pair costs little more than its chosen row.
"""

from __future__ import annotations

import torch

from tunesmith.data.collate import IGNORE

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # the ones that take a custom 4D mask as is


def _needed_len(labels: torch.Tensor) -> int:
    """Input tokens a row needs: up to the one before its last label (token t is predicted at t-1)."""
    labelled = (labels != IGNORE).nonzero()
    return int(labelled[-1]) if len(labelled) else 0


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens two rows share."""
    m = min(len(a), len(b))
    differ = (a[:m] != b[:m]).nonzero()
    return int(differ[0]) if len(differ) else m


def shared_prefix_layout(input_ids: torch.Tensor, labels: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Merged rows for a batch of rows [chosen_1..chosen_B, rejected_1..rejected_B] (right-padded).

    Returns `shared_input_ids` (B, W), `shared_position_ids` (B, W), `shared_mask` (B, W, W; True = may
    attend), `shared_index` (2B, T: each original token's place in its pair's merged row; tokens no
    log-prob needs point at 0) and `shared_pair` (2B,: which merged row holds each original row).
    """
    rows, width = input_ids.shape
    pairs = rows // 2
    index = torch.zeros(rows, width, dtype=torch.long)
    merged, spans = [], []
    for b in range(pairs):
        chosen, rejected = input_ids[b], input_ids[pairs + b]
        len_c, len_r = _needed_len(labels[b]), _needed_len(labels[pairs + b])
        shared = min(common_prefix(chosen[:len_c], rejected[:len_r]), len_c, len_r)
        tail = len_r - shared
        merged.append(torch.cat([chosen[:len_c], rejected[shared:len_r]]))
        index[b, :len_c] = torch.arange(len_c)
        index[pairs + b, :shared] = torch.arange(shared)
        index[pairs + b, shared:len_r] = torch.arange(len_c, len_c + tail)
        spans.append((len_c, shared, tail))
    size = max(1, max(len(m) for m in merged))
    ids = torch.full((pairs, size), pad_id, dtype=input_ids.dtype)
    positions = torch.zeros(pairs, size, dtype=torch.long)
    mask = torch.zeros(pairs, size, size, dtype=torch.bool)
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    for b, (len_c, shared, tail) in enumerate(spans):
        ids[b, : len_c + tail] = merged[b]
        positions[b, :len_c] = torch.arange(len_c)
        positions[b, len_c : len_c + tail] = torch.arange(shared, shared + tail)
        mask[b, :len_c, :len_c] = causal[:len_c, :len_c]
        mask[b, len_c : len_c + tail, :shared] = True
        mask[b, len_c : len_c + tail, len_c : len_c + tail] = causal[:tail, :tail]
        pad = torch.arange(len_c + tail, size)
        mask[b, pad, pad] = True  # padding attends to itself (no all-masked softmax rows)
    return {"shared_input_ids": ids, "shared_position_ids": positions, "shared_mask": mask,
            "shared_index": index, "shared_pair": torch.arange(pairs).repeat(2)}


def attention_mask_4d(mask: torch.Tensor, attn_implementation: str) -> torch.Tensor:
    """(B, 1, W, W) mask for the model: boolean for SDPA, additive fp32 for eager attention."""
    mask = mask[:, None]
    if attn_implementation == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)

