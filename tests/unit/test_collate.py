"""Batch order (every row once per epoch, deterministic, grouped by length) and padding."""

from __future__ import annotations

import random

import torch

from tunesmith.data.collate import length_grouped_order, pad_batch, padding_waste, plain_order
from tunesmith.data.templates import Example


def lengths_fixture(n: int = 1000) -> list[int]:
    rng = random.Random(0)
    return [rng.randint(5, 500) for _ in range(n)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_every_index_exactly_once_per_epoch():
    lengths = lengths_fixture(1003)
    for epoch in range(3):
        for batches in (length_grouped_order(lengths, 8, seed=1, epoch=epoch, mega=4),
                        plain_order(len(lengths), 8, seed=1, epoch=epoch)):
            assert sorted(flat(batches)) == list(range(1003))
            assert all(1 <= len(b) <= 8 for b in batches)
            assert sum(len(b) < 8 for b in batches) == 1  # 1003 = 125 * 8 + 3


def test_order_is_deterministic_and_changes_per_epoch():
    lengths = lengths_fixture(200)
    a = length_grouped_order(lengths, 4, seed=3, epoch=0)
    assert a == length_grouped_order(lengths, 4, seed=3, epoch=0)
    assert a != length_grouped_order(lengths, 4, seed=3, epoch=1)
    assert a != length_grouped_order(lengths, 4, seed=4, epoch=0)
    assert plain_order(200, 4, 3, 0) == plain_order(200, 4, 3, 0) != plain_order(200, 4, 3, 1)


def test_grouping_reduces_padding_and_longest_batch_first():
    lengths = lengths_fixture(1000)
    grouped = length_grouped_order(lengths, 8, seed=0, epoch=0, mega=16)
    plain = plain_order(len(lengths), 8, seed=0, epoch=0)
    assert padding_waste(grouped, lengths) * 5 < padding_waste(plain, lengths)
    assert max(lengths[i] for i in grouped[0]) == max(lengths)
    assert padding_waste([[0, 1]], [3, 7]) == 4


def test_mega_one_batch_is_still_random_order():
    lengths = list(range(64))
    batches = length_grouped_order(lengths, 4, seed=0, epoch=0, mega=1)
    assert sorted(flat(batches)) == list(range(64))
    assert flat(batches) != list(range(64))
    assert all(lengths[b[0]] >= lengths[b[-1]] for b in batches)  # each batch sorted longest first


def test_pad_batch_right_pads_and_counts_shifted_targets():
    rows = [
        Example([5, 6, 7, 8], [-100, -100, 7, 8], "f", 1, False),
        Example([9, 10], [9, 10], "f", 2, False),  # label at position 0 is never a target after the shift
    ]
    batch = pad_batch(rows, pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 2, 2]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [9, 10, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert int(batch["num_target_tokens"]) == 3  # 7, 8 and 10
