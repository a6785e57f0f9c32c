"""KTO (Ethayarajh et al. 2024, Eqs. 7-8): Kahneman-Tversky optimisation on unpaired good/bad examples.

r(x,y) = logπ(y|x) - logπ_ref(y|x); z0 = max(0, mean over mismatched pairs (x_i, y_j) of r), detached
(the batch KL baseline, estimated from each prompt paired with another row's completion, as TRL does);
desirable: λ_D (1 - σ(β(r - z0))), undesirable: λ_U (1 - σ(β(z0 - r))). λ_D = λ_U = 1 by default.
Summed over rows; weight = rows. The baseline is per micro-batch (as TRL's is per device batch).
Metrics are sums over rows (the loop divides by all rows of the window): kl, rewards/chosen and
rewards/rejected (summed over desirable / undesirable rows), and how many of each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.errors import TunesmithError
from tunesmith.objectives.base import LossOutput
from tunesmith.objectives.logprobs import batch_logps, sequence_logps


def kto_losses(logratios: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float, w_desirable: float = 1.0, w_undesirable: float = 1.0) -> torch.Tensor:
    """(B,) per-row KTO losses; `kl` is the (detached, clamped) baseline z0."""
    good = w_desirable * (1 - torch.sigmoid(beta * (logratios - kl)))
    bad = w_undesirable * (1 - torch.sigmoid(beta * (kl - logratios)))
    return torch.where(desirable, good, bad)


def kl_baseline(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean(logπ - logπ_ref)) over the mismatched rows, without gradient."""
    return (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


class KTOObjective:
    batch_kind = "unpaired"
    needs_reference = True

    def __init__(self, beta: float = 0.1, w_desirable: float = 1.0, w_undesirable: float = 1.0):
        self.beta, self.w_desirable, self.w_undesirable = beta, w_desirable, w_undesirable

    @classmethod
    def from_config(cls, align) -> "KTOObjective":
        return cls(align.beta, align.kto_desirable_weight, align.kto_undesirable_weight)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_rows"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        if ref is None:
            raise TunesmithError("KTO needs a reference model, but none was given")
        logps, _ = batch_logps(model, batch)
        with torch.no_grad():
            policy_kl = sequence_logps(model, batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"])[0]
        kl = kl_baseline(policy_kl, ref.logps(batch, "kl_input_ids").to(policy_kl.dtype))
        logratios = logps - ref.logps(batch).to(logps.dtype)
        desirable = batch["desirable"].bool()
        loss = kto_losses(logratios, desirable, kl, self.beta, self.w_desirable, self.w_undesirable).sum()
        rewards = self.beta * logratios.detach()
        n = logps.shape[0]
        metrics = {
            "kl": float(kl) * n,
            "rewards/chosen": float(rewards[desirable].sum()),
            "rewards/rejected": float(rewards[~desirable].sum()),
            "count/desirable": float(desirable.sum()),
            "count/undesirable": float((~desirable).sum()),
        }
        return LossOutput(loss=loss, weight=float(n), metrics=metrics)
