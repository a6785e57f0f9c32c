"""SimPO (Meng, Xia & Chen 2024, Eq. 6): reference-free, length-normalised preference loss.

L = -log σ(β/|y_w| · logπ(y_w) - β/|y_l| · logπ(y_l) - γ), β ≈ 2-2.5, γ ≈ 0.5-1.5; optional label smoothing ε
as in TRL's CPO trainer (loss_type simpo). Summed over pairs; weight = number of pairs.
Metrics: rewards are the scaled average log-probs β·logπ(y)/|y| (the implicit SimPO reward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.dpo import PairLogps, reward_metrics
from tunesmith.objectives.logprobs import batch_logps, split_pairs


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
        logps, counts = batch_logps(model, batch)
        chosen, rejected = split_pairs(logps)
        n_chosen, n_rejected = split_pairs(counts.clamp(min=1).to(logps.dtype))
        chosen_avg, rejected_avg = chosen / n_chosen, rejected / n_rejected
        loss = simpo_losses(chosen_avg, rejected_avg, self.beta, self.gamma, self.label_smoothing).sum()
        zero = torch.zeros_like(chosen)
        p = PairLogps(chosen, rejected, zero, zero, n_chosen, n_rejected)
        metrics = reward_metrics(self.beta * chosen_avg, self.beta * rejected_avg, p)
        return LossOutput(loss=loss, weight=float(chosen.shape[0]), metrics=metrics)
