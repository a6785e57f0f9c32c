"""ORPO (Hong, Lee & Thorne 2024, Eqs. 6-7): odds-ratio preference optimisation without a reference model.

L = NLL(y_w) + λ · (-log σ(log odds(y_w) - log odds(y_l))), odds(y) = P/(1-P) with log P the MEAN token
log-prob of the response; log(1-P) = log1mexp(log P) computed stably. The NLL term is the chosen response's
mean token NLL (Eq. 2; TRL averages over prompt+response tokens instead). Per pair, summed; weight = pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.dpo import policy_pair_logps, reward_metrics


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0 (Mächler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) below -ln 2."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def odds_ratio_terms(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) log σ(log odds ratio) and (B,) log odds ratio, from mean token log-probs."""
    log_odds = (chosen_avg - rejected_avg) - (log1mexp(chosen_avg) - log1mexp(rejected_avg))
    return F.logsigmoid(log_odds), log_odds


class ORPOObjective:
    batch_kind = "pairwise"
    needs_reference = False

    def __init__(self, lam: float = 0.1):
        self.lam = lam

    @classmethod
    def from_config(cls, align) -> "ORPOObjective":
        return cls(align.orpo_lambda)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_pairs"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        p = policy_pair_logps(model, batch)
        chosen_avg, rejected_avg = p.chosen_avg, p.rejected_avg
        ratio, log_odds = odds_ratio_terms(chosen_avg, rejected_avg)
        nll = -chosen_avg
        loss = (nll - self.lam * ratio).sum()
        metrics = reward_metrics(self.lam * chosen_avg, self.lam * rejected_avg, p)
        metrics.update({"nll_loss": float(nll.detach().sum()), "log_odds_ratio": float(log_odds.detach().sum()),
                        "log_odds_chosen": float(ratio.detach().sum())})
        return LossOutput(loss=loss, weight=float(p.chosen.shape[0]), metrics=metrics)
