"""Packing: lay a micro-batch's documents out in as few rows of at most `capacity` tokens as fit.

The same documents are trained on as with padding (so the loss and gradients are those of the padded
batch, a test proves it); only the layout changes, and most of the padding disappears. Per ALGORITHMS.md
(SFT, packing): positions restart at 0 for every document, attention cannot cross documents (the model
builds a block-diagonal causal mask from the restarting `position_ids`), and the first label of each
document is masked, so no document is trained to predict the start of the next one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tunesmith.data.templates import Example

IGNORE = -100


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most `capacity` (longest first, each into the first bin it fits).

    A length above `capacity` gets a bin of its own (callers truncate to max_length beforehand).
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def pack_batch(examples: list[Example], pad_id: int, capacity: int) -> dict[str, torch.Tensor]:
    """Packed tensors [rows, width]: input_ids, labels, position_ids and attention_mask (1 on real tokens).

    `attention_mask` marks real tokens for counting only; the objective passes `position_ids` instead so the
    model derives the per-document mask. Trailing padding gets positions 0.. of its own (a separate block).
    `num_target_tokens` equals `pad_batch`'s for the same examples.
    """
    lengths = [len(e.input_ids) for e in examples]
    bins = first_fit_decreasing(lengths, capacity)
    width = max(sum(lengths[i] for i in b) for b in bins)
    shape = (len(bins), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    for row, members in enumerate(bins):
        at = 0
        for i in members:
            n = lengths[i]
            input_ids[row, at : at + n] = torch.tensor(examples[i].input_ids, dtype=torch.long)
            labels[row, at + 1 : at + n] = torch.tensor(examples[i].labels[1:], dtype=torch.long)  # first label masked
            position_ids[row, at : at + n] = torch.arange(n)
            attention_mask[row, at : at + n] = 1
            at += n
        position_ids[row, at:] = torch.arange(width - at)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "num_target_tokens": (labels[:, 1:] != IGNORE).sum(),
    }


def packing_stats(lengths: list[int], batches: list[list[int]], capacity: int) -> dict[str, float]:
    """Real and laid-out tokens of a batch order, padded vs packed (for reports and the bench)."""
    real = sum(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    packed = 0
    for b in batches:
        bins = first_fit_decreasing([lengths[i] for i in b], capacity)
        packed += len(bins) * max(sum(lengths[b[i]] for i in row) for row in bins)
    return {"real_tokens": float(real), "padded_tokens": float(padded), "packed_tokens": float(packed)}
