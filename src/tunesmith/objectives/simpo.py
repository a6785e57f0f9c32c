"""SimPO (Meng, Xia & Chen 2024, Eq. 6): reference-free, length-normalised preference loss.

L = -log σ(β/|y_w| · logπ(y_w) - β/|y_l| · logπ(y_l) - γ), β ≈ 2-2.5, γ ≈ 0.5-1.5; optional label smoothing ε
as in TRL's CPO trainer (loss_type simpo). Summed over pairs; weight = number of pairs.
Metrics: rewards are the scaled average log-probs β·logπ(y)/|y| (the implicit SimPO reward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.dpo import policy_pair_logps, reward_metrics


def simpo_losses(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, beta: float, gamma: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) losses from length-normalised (mean per token) log-probs."""
    h = beta * (chosen_avg - rejected_avg) - gamma
    return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)


class SimPOObjective:
    batch_kind = "pairwise"
    needs_reference = False

    def __init__(self, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0):
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing

    @classmethod
    def from_config(cls, align) -> "SimPOObjective":
        return cls(align.beta, align.simpo_gamma, align.label_smoothing)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_pairs"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        p = policy_pair_logps(model, batch)
        loss = simpo_losses(p.chosen_avg, p.rejected_avg, self.beta, self.gamma, self.label_smoothing).sum()
        metrics = reward_metrics(self.beta * p.chosen_avg, self.beta * p.rejected_avg, p)
        return LossOutput(loss=loss, weight=float(p.chosen.shape[0]), metrics=metrics)
