"""Batch sources: the loop only pulls micro-batches through a cursor (epoch, index) it can save and restore."""

from __future__ import annotations

from typing import Protocol

from tunesmith.data.collate import length_grouped_order, pad_batch, plain_order
from tunesmith.data.packing import pack_batch
from tunesmith.data.templates import Example


class BatchSource(Protocol):
    def batches_per_epoch(self) -> int: ...

    def batch(self, epoch: int, index: int) -> dict: ...


class SFTBatchSource:
    """SFT micro-batches in a deterministic per-epoch order (length-grouped or plain shuffle).

    Rows are right-padded, or with `pack_to > 0` each micro-batch's documents are packed into rows of at
    most `pack_to` tokens (same documents, same loss, less padding; see `data.packing`).
    """

    def __init__(self, examples: list[Example], batch_size: int, pad_id: int, seed: int, group_by_length: bool,
                 pack_to: int = 0):
        if not examples:
            raise ValueError("no training examples")
        self.examples = examples
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.group_by_length = group_by_length
        self.pack_to = pack_to
        self._orders: dict[int, list[list[int]]] = {}

    def order(self, epoch: int) -> list[list[int]]:
        if epoch not in self._orders:
            self._orders = {}  # keep only the current epoch's order
            if self.group_by_length:
                lengths = [len(e.input_ids) for e in self.examples]
                self._orders[epoch] = length_grouped_order(lengths, self.batch_size, self.seed, epoch)
            else:
                self._orders[epoch] = plain_order(len(self.examples), self.batch_size, self.seed, epoch)
        return self._orders[epoch]

    def batches_per_epoch(self) -> int:
        return len(self.order(0))

    def batch(self, epoch: int, index: int) -> dict:
        rows = [self.examples[i] for i in self.order(epoch)[index]]
        if self.pack_to > 0:
            return pack_batch(rows, self.pad_id, self.pack_to)
        return pad_batch(rows, self.pad_id)


def eval_batches(examples: list[Example], batch_size: int, pad_id: int) -> list[dict]:
    """Evaluation batches sorted by length (order does not matter for a summed loss)."""
    ranked = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    return [pad_batch([examples[i] for i in ranked[s : s + batch_size]], pad_id) for s in range(0, len(ranked), batch_size)]
