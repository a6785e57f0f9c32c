"""Batch sources for preference objectives: pairwise (chosen+rejected) and unpaired (KTO) micro-batches.

Pairwise batch: rows [chosen_1..chosen_B, rejected_1..rejected_B] right-padded to one width, so a single
forward gives both halves; `num_pairs` = B is the objective's weight. Unpaired batch: B rows with
`desirable` flags, plus `kl_*` rows pairing prompt i with completion i-1 (KTO's mismatched pairs), built by
joining token ids at the checked prompt boundary. Both use the SFT cursor (epoch, index) and orders, so
resume and accumulation behave exactly as for SFT (a future rollout source plugs in the same way).
"""

from __future__ import annotations

import torch
from torch import nn

from tunesmith.config.schema import RunConfig
from tunesmith.data.collate import length_grouped_order, pad_batch, plain_order
from tunesmith.data.pair_layout import shared_prefix_layout
from tunesmith.data.preference import PairExample, UnpairedExample, load_preference_set, rejected_to_divergence
from tunesmith.data.templates import Example
from tunesmith.errors import SkipReport, TunesmithError


class _OrderedSource:
    """Deterministic per-epoch batches of item indices (length-grouped or shuffled), as SFTBatchSource."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
        if not lengths:
            raise TunesmithError("no training examples")
        self.lengths, self.batch_size, self.seed, self.group_by_length = lengths, batch_size, seed, group_by_length
        self._orders: dict[int, list[list[int]]] = {}

    def order(self, epoch: int) -> list[list[int]]:
        if epoch not in self._orders:
            if self.group_by_length:
                order = length_grouped_order(self.lengths, self.batch_size, self.seed, epoch)
            else:
                order = plain_order(len(self.lengths), self.batch_size, self.seed, epoch)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def batches_per_epoch(self) -> int:
        return len(self.order(0))


def pairwise_batch(pairs: list[PairExample], pad_id: int, use_cached: bool = True, shared_prefix: bool = False) -> dict:
    """Chosen rows then rejected rows in one padded batch, plus `num_pairs` and per-pair `margin`; and
    `ref_logps` (2B,) when every pair carries precomputed reference log-probs (training/ref_logps.py);
    with `shared_prefix` also the one-row-per-pair layout (data/pair_layout.py) the log-prob forward runs."""
    batch = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    if shared_prefix:
        batch.update(shared_prefix_layout(batch["input_ids"], batch["labels"], pad_id))
    batch["num_pairs"] = len(pairs)
    batch["margin"] = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    cached = [getattr(p, "ref_logps", None) for p in pairs] if use_cached else [None]
    if all(c is not None for c in cached):
        batch["ref_logps"] = torch.tensor([c[0] for c in cached] + [c[1] for c in cached], dtype=torch.float32)
    return batch


def _mismatched(rows: list[UnpairedExample]) -> list[Example]:
    """Prompt of row i + completion of row i-1 (token level, at the checked boundary)."""
    out = []
    for i, row in enumerate(rows):
        other = rows[i - 1]
        ids = row.example.input_ids[: row.prompt_len] + other.example.input_ids[other.prompt_len:]
        labels = [-100] * row.prompt_len + other.example.labels[other.prompt_len:]
        out.append(Example(ids, labels, row.example.source, row.example.line, False))
    return out


def unpaired_batch(rows: list[UnpairedExample], pad_id: int) -> dict:
    """KTO rows with `desirable` flags and the mismatched `kl_*` rows for the KL baseline."""
    batch = pad_batch([r.example for r in rows], pad_id)
    kl = pad_batch(_mismatched(rows), pad_id)
    batch.update({f"kl_{k}": v for k, v in kl.items() if k != "num_target_tokens"})
    batch["desirable"] = torch.tensor([r.label for r in rows], dtype=torch.bool)
    batch["num_rows"] = len(rows)
    return batch


class PairwiseBatchSource(_OrderedSource):
    def __init__(self, pairs: list[PairExample], batch_size: int, pad_id: int, seed: int, group_by_length: bool = True,
                 shared_prefix: bool = False):
        super().__init__([max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs], batch_size, seed, group_by_length)
        self.pairs, self.pad_id, self.shared_prefix = pairs, pad_id, shared_prefix

    def batch(self, epoch: int, index: int) -> dict:
        return pairwise_batch([self.pairs[i] for i in self.order(epoch)[index]], self.pad_id, shared_prefix=self.shared_prefix)


class UnpairedBatchSource(_OrderedSource):
    def __init__(self, rows: list[UnpairedExample], batch_size: int, pad_id: int, seed: int, group_by_length: bool = True):
        super().__init__([len(r.example.input_ids) for r in rows], batch_size, seed, group_by_length)
        self.rows, self.pad_id = rows, pad_id

    def batch(self, epoch: int, index: int) -> dict:
        return unpaired_batch([self.rows[i] for i in self.order(epoch)[index]], self.pad_id)


SOURCES = {"pairwise": PairwiseBatchSource, "unpaired": UnpairedBatchSource}


def load_preference_sets(cfg: RunConfig, tokenizer, kind: str, report: SkipReport) -> tuple[list, list]:
    """Train and eval examples (pairs or unpaired rows) from the configured files; skips counted in `report`."""
    import random

    train = load_preference_set(cfg.data.train, tokenizer, kind, cfg.data, report)  # cached when data.cache is on
    evals = load_preference_set(cfg.data.eval, tokenizer, kind, cfg.data, report) if cfg.data.eval else []
    if not evals and cfg.data.eval_fraction > 0:
        order = list(range(len(train)))
        random.Random(cfg.train.seed).shuffle(order)
        held = set(order[: max(1, round(len(train) * cfg.data.eval_fraction))])
        if len(held) >= len(train):
            raise TunesmithError(f"eval_fraction={cfg.data.eval_fraction} leaves no training rows out of {len(train)}")
        train, evals = [x for i, x in enumerate(train) if i not in held], [x for i, x in enumerate(train) if i in held]
    if kind == "pairwise" and cfg.align.rejected_tokens == "to_divergence":
        train, evals = [rejected_to_divergence(p) for p in train], [rejected_to_divergence(p) for p in evals]
    return train, evals


def eval_batches(items: list, kind: str, batch_size: int, pad_id: int, shared_prefix: bool = False) -> list[dict]:
    if kind == "pairwise":
        return [pairwise_batch(items[s : s + batch_size], pad_id, shared_prefix=shared_prefix) for s in range(0, len(items), batch_size)]
    return [unpaired_batch(items[s : s + batch_size], pad_id) for s in range(0, len(items), batch_size)]


@torch.no_grad()
def evaluate_objective(model, objective, batches: list[dict], ref=None) -> dict[str, float]:
    """The objective's loss and metrics over evaluation batches, averaged by its weight (dropout off)."""
    from tunesmith.training.loop import _to_device, autocast_context

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    total = 0.0
    try:
        for batch in batches:
            batch = _to_device(batch, device)
            with autocast_context(model):
                out = objective(model, batch, ref=ref)
            total += out.weight
            for key, value in {"loss": float(out.loss), **out.metrics}.items():
                sums[key] = sums.get(key, 0.0) + value
    finally:
        model.train(was_training)
    return {key: value / max(total, 1e-9) for key, value in sums.items()} | {"weight": total}


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout to 0 (nn.Dropout modules, LoRA dropout, attention-dropout attributes): policy
    log-probs must be deterministic (ALGORITHMS.md trap 5). Returns how many were changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            module.p = 0.0
            changed += 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate > 0:
            module.attention_dropout = 0.0
            changed += 1
    return changed


def preference_stats(items: list) -> dict:
    """dataset_stats for pairs / unpaired rows: every tokenised sequence counts (a pair is two rows)."""
    from tunesmith.data.dataset import dataset_stats

    examples = [e for item in items for e in ((item.chosen, item.rejected) if isinstance(item, PairExample) else (item.example,))]
    return dataset_stats(examples)
