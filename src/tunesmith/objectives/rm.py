"""Reward model training with the Bradley-Terry pairwise loss (Ouyang et al. 2022, Eq. 1; Stiennon et al. 2020).

L = -log σ(r(x,y_w) - r(x,y_l) - m) + c·(r(x,y_w) + r(x,y_l))^2, with m the row's margin plus align.rm_margin
(Llama 2, Touvron et al. 2023, Eq. 2) and c the optional centring coefficient (Eisenstein et al. 2023).
r is a scalar head at the last real token (models/heads.py). Summed over pairs; weight = pairs.
Metrics (summed; the loop divides by pairs): accuracy (r_w > r_l), margin (r_w - r_l), reward mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.models.heads import attach_head, reward_scores
from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.logprobs import split_pairs


def bradley_terry_losses(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0, center_coef: float = 0.0) -> torch.Tensor:
    """(B,) per-pair reward-model losses."""
    losses = -F.logsigmoid(r_chosen - r_rejected - margin)
    if center_coef:
        losses = losses + center_coef * (r_chosen + r_rejected) ** 2
    return losses


class RewardModelObjective:
    batch_kind = "pairwise"
    needs_reference = False

    def __init__(self, margin: float = 0.0, center_coef: float = 0.0):
        self.margin, self.center_coef = margin, center_coef

    @classmethod
    def from_config(cls, align) -> "RewardModelObjective":
        return cls(align.rm_margin, align.rm_center_coef)

    def prepare(self, model):
        """Attach the trainable scalar head before the optimizer is built."""
        attach_head(model)
        return model

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_pairs"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        rewards = reward_scores(model, batch["input_ids"], batch["attention_mask"])  # (2B,)
        r_chosen, r_rejected = split_pairs(rewards)
        margin = batch.get("margin", torch.zeros_like(r_chosen)).to(r_chosen) + self.margin
        loss = bradley_terry_losses(r_chosen, r_rejected, margin, self.center_coef).sum()
        c, r = r_chosen.detach(), r_rejected.detach()
        metrics = {"accuracy": float((c > r).float().sum()), "margin": float((c - r).sum()), "reward_mean": float(((c + r) / 2).sum())}
        return LossOutput(loss=loss, weight=float(c.shape[0]), metrics=metrics)
