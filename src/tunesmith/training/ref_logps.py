"""Precomputed reference log-probs (`align.precompute_ref_logps: true`) for the DPO family.

The reference π_ref is frozen, so log π_ref(y_w|x) and log π_ref(y_l|x) of every pair can be computed ONCE
before training (as TRL's `precompute_ref_log_probs`) instead of one reference forward per step and per
evaluation. They are cached on disk under `align.ref_logps_cache`, in a file named by a hash of everything
that determines them: the tokenised pairs (so the data, template, system prompt and max_length), the base
model's files, the starting adapter's files, the reference kind (adapters disabled or frozen copy) and the
dtype. A rerun with the same inputs reads the file instead of running the reference again.

Each pair gets a `ref_logps` (chosen, rejected) attribute; `pairwise_batch` turns those into a (2B,) tensor
`batch["ref_logps"]` laid out like the batch rows, and `PrecomputedReference.logps` returns it, so the
objectives are unchanged. After precomputing, the reference model itself is no longer held (a frozen copy
is freed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tunesmith.data.versioning import file_sha256
from tunesmith.errors import TunesmithError
from tunesmith.models.load import dtype_name, resolve_device

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".model")


class PrecomputedReference:
    """Reference whose log-probs were computed before training and travel with each batch."""

    kind = "precomputed"

    def __init__(self, source_kind: str, cache_files: list[Path], reused: list[bool]):
        self.source_kind, self.cache_files, self.reused = source_kind, cache_files, reused

    def logps(self, batch: dict, input_key: str = "input_ids") -> torch.Tensor:
        if input_key != "input_ids" or "ref_logps" not in batch:
            raise TunesmithError("align.precompute_ref_logps: this batch carries no precomputed reference log-probs "
                                 "(only pairwise objectives such as dpo support precomputing)")
        return batch["ref_logps"]


def _hash_files(folder: str | Path | None) -> str:
    """sha256 over the names and bytes of a model/adapter folder's weight and config files ('' for None)."""
    if folder is None:
        return ""
    path = Path(folder)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _hash_pairs(pairs: list) -> str:
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps([p.chosen.input_ids, p.chosen.labels, p.rejected.input_ids, p.rejected.labels]).encode())
    return digest.hexdigest()


def cache_key(cfg, tokenizer, pairs: list, ref_kind: str, model_hash: str) -> dict[str, str]:
    """The parts that determine the reference log-probs of `pairs`, each hashed."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "data": _hash_pairs(pairs),
        "model": model_hash,
        "adapter": _hash_files(cfg.model.adapter),
        "template": hashlib.sha256(f"{cfg.data.template}\n{template}".encode()).hexdigest(),
        "max_length": str(cfg.data.max_length),
        "shared_prefix": str(cfg.align.shared_prefix),  # another batch layout: the same values only up to float rounding
        "reference": ref_kind,
        "dtype": dtype_name(cfg.model.dtype, resolve_device(cfg.model.device).type),  # 'auto' keyed by what it resolves to
    }


@torch.no_grad()
def compute_ref_logps(ref, model, pairs: list, batch_size: int, pad_id: int, shared_prefix: bool = False) -> torch.Tensor:
    """(N, 2) reference log-probs (chosen, rejected) of `pairs`, batched as training batches them."""
    from tunesmith.objectives.logprobs import split_pairs
    from tunesmith.training.loop import _to_device, autocast_context
    from tunesmith.training.pairwise import pairwise_batch

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = _to_device(pairwise_batch(pairs[start : start + batch_size], pad_id, use_cached=False, shared_prefix=shared_prefix), device)
        with autocast_context(model):
            chosen, rejected = split_pairs(ref.logps(batch).float().cpu())
        out.append(torch.stack([chosen, rejected], dim=1))  # (b, 2)
    return torch.cat(out) if out else torch.zeros(0, 2)


def _cached(ref, model, cfg, tokenizer, pairs: list, model_hash: str) -> tuple[torch.Tensor, Path, bool]:
    key = cache_key(cfg, tokenizer, pairs, ref.kind, model_hash)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cfg.align.ref_logps_cache) / f"ref_logps-{name}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == key and stored["logps"].shape == (len(pairs), 2):
            return stored["logps"], path, True
    values = compute_ref_logps(ref, model, pairs, cfg.train.batch_size, tokenizer.pad_token_id, cfg.align.shared_prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save({"key": key, "logps": values}, partial)
    partial.replace(path)  # atomic: a killed run never leaves a half-written cache
    return values, path, False


def precompute_reference(ref, model, cfg, tokenizer, sets: list[list]) -> PrecomputedReference:
    """Attach cached reference log-probs to every pair in `sets` (train, eval); return the stand-in reference."""
    from tunesmith.data.preference import PairExample
    from tunesmith.models.load import resolve_model_path

    if not all(isinstance(item, PairExample) for items in sets for item in items):
        raise TunesmithError("align.precompute_ref_logps works with pairwise objectives (dpo); this objective's data is not pairs")
    model_hash = _hash_files(resolve_model_path(cfg.model.name_or_path, cfg.model.gguf_file))
    files, reused = [], []
    for items in sets:
        if not items:
            continue
        values, path, hit = _cached(ref, model, cfg, tokenizer, items, model_hash)
        for item, row in zip(items, values.tolist()):
            item.ref_logps = (row[0], row[1])
        files.append(path)
        reused.append(hit)
    return PrecomputedReference(ref.kind, files, reused)
