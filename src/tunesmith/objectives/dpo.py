"""Direct Preference Optimization and its relatives on (chosen, rejected) pairs.

DPO (Rafailov et al. 2023, Eq. 7): h = β[(logπ(y_w) - logπ_ref(y_w)) - (logπ(y_l) - logπ_ref(y_l))],
L = -log σ(h). Variants (ALGORITHMS.md):
- sigmoid with label smoothing ε: conservative DPO (cDPO, Mitchell 2023): -(1-ε)log σ(h) - ε log σ(-h);
- ipo (Azar et al. 2023, Eq. 17): (Δ/|y| - 1/(2β))^2 with length-normalised log-ratios (as TRL, confirmed by the authors);
- hinge (SLiC, Zhao et al. 2023): relu(1 - h);
- robust (Chowdhury et al. 2024, Eq. 7): (-(1-ε)log σ(h) + ε log σ(-h)) / (1 - 2ε).
Optional RPO term (Pang et al. 2024, Eq. 2): α · NLL(y_w)/|y_w| per pair.
Losses are summed over pairs; the loop divides by the number of pairs in the accumulation window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunesmith.errors import TunesmithError
from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.logprobs import batch_logps, split_pairs


@dataclass
class PairLogps:
    """Sequence log-probs of a batch of pairs under the policy and the reference, with response lengths."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor

    @property
    def chosen_avg(self) -> torch.Tensor:
        return self.chosen / self.chosen_len

    @property
    def rejected_avg(self) -> torch.Tensor:
        return self.rejected / self.rejected_len


def policy_pair_logps(model, batch: dict) -> PairLogps:
    """Policy-only PairLogps (reference terms zero) for reference-free losses (SimPO, ORPO)."""
    logps, counts = batch_logps(model, batch)
    chosen, rejected = split_pairs(logps)
    n_chosen, n_rejected = split_pairs(counts.clamp(min=1).to(logps.dtype))
    zero = torch.zeros_like(chosen)
    return PairLogps(chosen, rejected, zero, zero, n_chosen, n_rejected)


def _sigmoid(h, p, beta, eps):
    return -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)


def _hinge(h, p, beta, eps):
    return torch.relu(1 - h)


def _ipo(h, p, beta, eps):
    delta = (p.chosen - p.ref_chosen) / p.chosen_len.clamp(min=1) - (p.rejected - p.ref_rejected) / p.rejected_len.clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


def _robust(h, p, beta, eps):
    return (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)


DPO_LOSSES = {"sigmoid": _sigmoid, "hinge": _hinge, "ipo": _ipo, "robust": _robust}


def dpo_losses(p: PairLogps, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) per-pair losses for the chosen DPO variant."""
    if loss_type not in DPO_LOSSES:
        raise TunesmithError(f"align.loss_type: unknown DPO variant '{loss_type}' ({', '.join(DPO_LOSSES)})")
    h = beta * ((p.chosen - p.ref_chosen) - (p.rejected - p.ref_rejected))
    return DPO_LOSSES[loss_type](h, p, beta, label_smoothing)


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, p: PairLogps) -> dict[str, float]:
    """ALGORITHMS.md DPO metrics, SUMMED over pairs (the loop divides by the window's pair count)."""
    c, r = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": float(c.sum()),
        "rewards/rejected": float(r.sum()),
        "rewards/accuracies": float((c > r).float().sum()),  # strict: 0.0 at step 0
        "rewards/margins": float((c - r).sum()),
        "logps/chosen": float(p.chosen.detach().sum()),
        "logps/rejected": float(p.rejected.detach().sum()),
    }


def pair_logps(model, batch: dict, ref) -> PairLogps:
    """Policy log-probs (one forward over chosen+rejected) and reference log-probs (no grad)."""
    if ref is None:
        raise TunesmithError("this objective needs a reference model, but none was given")
    logps, counts = batch_logps(model, batch)
    ref_logps = ref.logps(batch).to(logps.dtype)
    chosen, rejected = split_pairs(logps)
    ref_chosen, ref_rejected = split_pairs(ref_logps)
    chosen_len, rejected_len = split_pairs(counts.to(logps.dtype))
    return PairLogps(chosen, rejected, ref_chosen, ref_rejected, chosen_len, rejected_len)


class DPOObjective:
    """DPO family on pairwise batches; weight = number of pairs."""

    batch_kind = "pairwise"
    needs_reference = True

    def __init__(self, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0, sft_alpha: float = 0.0):
        if loss_type not in DPO_LOSSES:
            raise TunesmithError(f"align.loss_type: unknown DPO variant '{loss_type}' ({', '.join(DPO_LOSSES)})")
        self.beta, self.loss_type, self.label_smoothing, self.sft_alpha = beta, loss_type, label_smoothing, sft_alpha

    @classmethod
    def from_config(cls, align) -> "DPOObjective":
        return cls(align.beta, align.loss_type, align.label_smoothing, align.sft_alpha)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_pairs"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        p = pair_logps(model, batch, ref)
        losses = dpo_losses(p, self.beta, self.loss_type, self.label_smoothing)
        if self.sft_alpha:
            losses = losses + self.sft_alpha * (-p.chosen / p.chosen_len.clamp(min=1))
        loss = losses.sum()
        metrics = reward_metrics(self.beta * (p.chosen - p.ref_chosen), self.beta * (p.rejected - p.ref_rejected), p)
        return LossOutput(loss=loss, weight=float(p.chosen.shape[0]), metrics=metrics)
