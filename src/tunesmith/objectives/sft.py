"""Supervised fine-tuning: next-token cross-entropy on supervised (label != -100) tokens only.

The LM head runs only at supervised positions, so the (positions x vocab) logits of masked prompt
tokens are never built (ALGORITHMS.md, SFT). The loss is a sum; the loop normalises it by the
supervised tokens of the whole accumulation window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.objectives.base import LossOutput, backbone_and_head, needs_full_logits

IGNORE = -100


def supervised_ce_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token CE over supervised positions, and how many there were."""
    targets = labels[:, 1:]  # (B, T-1): token t is predicted from position t-1
    mask = targets != IGNORE
    count = int(mask.sum())
    if needs_full_logits(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        return F.cross_entropy(logits[mask].float(), targets[mask], reduction="sum"), count
    backbone, head = backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    selected = hidden[:, :-1][mask]  # (N, H): only positions that predict a supervised token
    logits = head(selected).float()  # (N, V)
    return F.cross_entropy(logits, targets[mask], reduction="sum"), count


class SFTObjective:
    """Cross-entropy on supervised tokens; weight = supervised tokens."""

    batch_kind = "sft"
    needs_reference = False

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_target_tokens"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        loss, count = supervised_ce_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return LossOutput(loss=loss, weight=float(count), metrics={"loss": loss.detach().item()})
