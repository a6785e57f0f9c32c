"""The objective contract: `objective(model, batch, ref=None) -> LossOutput`.

Losses are returned as SUMS with the weight they carry (supervised tokens for token-level losses,
pairs for sequence-level ones). The loop divides by the total weight of the whole accumulation window,
so `batch 8 x accum 1` equals `batch 1 x accum 8` (DESIGN.md, loss normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class LossOutput:
    loss: torch.Tensor  # summed loss over the micro-batch (not yet normalised)
    weight: float  # what the sum runs over (tokens or pairs)
    metrics: dict[str, float] = field(default_factory=dict)  # summed too; divided by the window weight when logged


class Objective(Protocol):
    batch_kind: str  # "sft" | "pairwise" | "unpaired" | "rollout"
    needs_reference: bool

    def batch_weight(self, batch: dict) -> float:
        """Weight of a micro-batch, known before the forward pass (for window normalisation)."""

    def __call__(self, model, batch: dict, ref=None) -> LossOutput: ...


def unwrap(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone_and_head(model):
    """(decoder stack returning hidden states, output projection) of a causal LM."""
    inner = unwrap(model)
    return getattr(inner, inner.base_model_prefix), inner.get_output_embeddings()


def needs_full_logits(model) -> bool:
    """Models whose logits are post-processed (soft-capping, scaling) must go through their own forward."""
    cfg = unwrap(model).config
    return bool(getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None))
