"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, §4.1, Eq. 3).

G responses are sampled per prompt; each response's advantage is its group-normalised reward
A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4) (objectives/advantages.py), on every token; no value model.
Per token: L = max(-A ρ_t, -A clip(ρ_t, 1-ε, 1+ε)) + β·KL_t with the k3 estimator (Schulman 2020, "Approximating
KL divergence"; DeepSeekMath Eq. 4): KL_t = exp(logπ_ref - logπ) - (logπ_ref - logπ) - 1 (only with kl_in_loss).
The loss is SUMMED over tokens with weight = tokens, so the loop normalises by the tokens of the whole
accumulation window (token-level normalisation as in DAPO, Yu et al. 2025, rather than a per-sequence mean).
"""

from __future__ import annotations

import torch

from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.ppo import policy_losses, response_forward, row_metrics, token_metrics


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): unbiased, always >= 0."""
    log_ratio = ref_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1


class GRPOObjective:
    batch_kind = "rollout"
    uses_values = False
    advantage_kind = "group"

    def __init__(self, cliprange: float = 0.2, kl_coef: float = 0.04, kl_in_loss: bool = True, temperature: float = 1.0):
        self.cliprange, self.kl_coef, self.kl_in_loss, self.temperature = cliprange, kl_coef, kl_in_loss, temperature
        self.needs_reference = kl_coef > 0

    @classmethod
    def from_rl(cls, rl) -> "GRPOObjective":
        return cls(rl.cliprange, rl.kl_coef, rl.kl_in_loss is not False, rl.temperature)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_tokens"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        fwd = response_forward(model, batch, self.temperature)
        losses, clipped = policy_losses(fwd.logps, batch["old_logps"], batch["advantages"], self.cliprange)
        metrics = token_metrics(fwd, batch["old_logps"], clipped)
        metrics["policy_loss"] = float(losses.detach().sum())
        if self.kl_in_loss and self.kl_coef > 0:
            kl = k3_kl(fwd.logps, batch["ref_logps"])
            losses = losses + self.kl_coef * kl
            metrics["kl_k3"] = float(kl.detach().sum())
        weight = float(losses.numel())
        metrics.update(row_metrics(batch, weight))
        return LossOutput(loss=losses.sum(), weight=weight, metrics=metrics)
