"""Batching: a deterministic per-epoch order (optionally grouped by length) and right-padded tensors."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tunesmith.data.templates import Example

IGNORE = -100


def _rng(seed: int, epoch: int) -> random.Random:
    """One generator per (seed, epoch): the order of epoch e never depends on what ran before."""
    return random.Random(seed * 1_000_003 + epoch)


def _cut(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def plain_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of row indices; every index exactly once (the last batch may be smaller)."""
    indices = list(range(n))
    _rng(seed, epoch).shuffle(indices)
    return _cut(indices, batch_size)


def length_grouped_order(
    lengths: list[int], batch_size: int, seed: int, epoch: int, mega: int = 64
) -> list[list[int]]:
    """Batches of similar-length rows, still random: shuffle, cut into mega-batches of `mega * batch_size`
    rows, sort each by length, cut into batches, shuffle the batch order. The longest batch goes first,
    so an out-of-memory error shows up at step one rather than hours in."""
    rng = _rng(seed, epoch)
    indices = list(range(len(lengths)))
    rng.shuffle(indices)
    size = max(1, mega) * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(indices), size):
        group = sorted(indices[start : start + size], key=lambda i: -lengths[i])
        batches.extend(_cut(group, batch_size))
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def padding_waste(batches: list[list[int]], lengths: list[int]) -> int:
    """Pad tokens a batch order costs (rows padded to the longest row of their batch)."""
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches if b)


def pad_batch(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows into tensors [batch, longest]; labels are -100 on padding.

    `num_target_tokens` counts labels that are targets after the causal shift (labels[:, 1:]),
    which is what the loss is normalised by.
    """
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "num_target_tokens": (labels[:, 1:] != IGNORE).sum(),
    }
