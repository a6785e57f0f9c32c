"""PPO for RLHF (Schulman et al. 2017; Ouyang et al. 2022; Huang et al. 2024, "The N Implementation Details
of RLHF with PPO").

Clipped surrogate (Schulman 2017, Eq. 7), per response token t with ρ_t = π(y_t)/π_old(y_t):
    L_pg = max(-A_t ρ_t, -A_t clip(ρ_t, 1-ε, 1+ε))
Clipped value loss (N details, detail 9; as OpenAI's lm-human-preferences and TRL):
    L_v = ½ max((V_t - R_t)², (clip(V_t, V_old-ε_v, V_old+ε_v) - R_t)²)
Loss = Σ_t L_pg + vf_coef Σ_t L_v, SUMMED over the micro-batch's response tokens; weight = tokens, so the loop
normalises by the tokens of the whole accumulation window. Rewards, advantages (GAE, whitened), old log-probs
and old values come precomputed in the rollout batch (training/rollout.py). The value head is a scalar head
on the policy's last hidden state (shared backbone), read at the position that predicts each response token.
Log-probs use logits / temperature, the distribution the rollout sampled from (N details, detail 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError
from tunesmith.models.heads import VALUE_ATTR, ScalarHead, attach_head
from tunesmith.objectives.base import LossOutput, backbone_and_head, unwrap

IGNORE = -100


@dataclass
class TokenForward:
    """Per response token (flat (M,), row-major over the batch): log-probs, entropies, values (or None)."""

    logps: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None
    rows: torch.Tensor  # (M,) row index of each token


def attach_value_head(model) -> ScalarHead:
    """A trainable fp32 scalar value head on the policy (once), checkpointed with the trainable weights and
    saved as value_head.safetensors next to (never inside) the final adapter/model (heads.save_with_heads)."""
    return attach_head(model, attr=VALUE_ATTR)


def response_forward(model, batch: dict, temperature: float = 1.0, with_values: bool = False) -> TokenForward:
    """One forward; the LM head runs only at positions predicting a response token (labels != -100)."""
    targets = batch["labels"][:, 1:]  # (N, T-1): token t is predicted at position t-1
    mask = targets != IGNORE
    backbone, lm_head = backbone_and_head(model)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (N, T, H)
    picked = hidden[:, :-1][mask]  # (M, H)
    logits = lm_head(picked).float() / max(temperature, 1e-7)  # (M, V)
    norm = torch.logsumexp(logits, dim=-1)
    logps = logits.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1) - norm  # (M,)
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = norm - (probs * logits).sum(-1)
    values = getattr(unwrap(model), VALUE_ATTR)(picked).float() if with_values else None
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]
    return TokenForward(logps, entropy, values, rows)


def policy_losses(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                  cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate losses and a 0/1 flag where clipping was active."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def value_losses(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                 cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped value losses ½max((V-R)², (V_clip-R)²) and a 0/1 flag where clipping won."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped), (clipped > plain).float()


def row_metrics(batch: dict, weight: float) -> dict[str, float]:
    """Rollout metrics per response (score, KL, length, EOS, ...), scaled so that the loop's division by the
    window's tokens gives their mean over the window's responses (exact for a one-micro-batch window)."""
    scale = weight / max(int(batch["num_rows"]), 1)
    return {key: float(batch["row_metrics"][key].sum()) * scale for key in batch["row_metrics"]}


def token_metrics(fwd: TokenForward, old_logps: torch.Tensor, clipped: torch.Tensor) -> dict[str, float]:
    """Summed per-token diagnostics: entropy, clip fraction, approx KL ½(logπ - logπ_old)² (as TRL)."""
    diff = (fwd.logps.detach() - old_logps)
    return {"entropy": float(fwd.entropy.sum()), "clipfrac": float(clipped.sum()),
            "approx_kl": float((0.5 * diff**2).sum()), "ratio": float(torch.exp(diff).sum())}


class PPOObjective:
    """PPO-clip with a value head; rollout batches come from training/rollout.py."""

    batch_kind = "rollout"
    uses_values = True
    advantage_kind = "gae"

    def __init__(self, cliprange: float = 0.2, cliprange_value: float = 0.2, vf_coef: float = 0.1,
                 temperature: float = 1.0, kl_coef: float = 0.05):
        self.cliprange, self.cliprange_value, self.vf_coef = cliprange, cliprange_value, vf_coef
        self.temperature, self.kl_coef = temperature, kl_coef
        self.needs_reference = kl_coef > 0  # the KL penalty sits in the per-token rewards

    @classmethod
    def from_rl(cls, rl) -> "PPOObjective":
        if rl.kl_in_loss:
            raise TunesmithError("rl.kl_in_loss: PPO puts the KL penalty in the per-token reward; leave it unset (or false) for ppo")
        return cls(rl.cliprange, rl.cliprange_value, rl.vf_coef, rl.temperature, rl.kl_coef)

    def prepare(self, model):
        """Attach the value head before the optimizer is built (and before a checkpoint is loaded)."""
        attach_value_head(model)
        return model

    def batch_weight(self, batch: dict) -> float:
        return float(batch["num_tokens"])

    def __call__(self, model, batch: dict, ref=None) -> LossOutput:
        fwd = response_forward(model, batch, self.temperature, with_values=True)
        pg, clipped = policy_losses(fwd.logps, batch["old_logps"], batch["advantages"], self.cliprange)
        vf, vf_clipped = value_losses(fwd.values, batch["old_values"], batch["returns"], self.cliprange_value)
        loss = pg.sum() + self.vf_coef * vf.sum()
        weight = float(pg.numel())
        metrics = token_metrics(fwd, batch["old_logps"], clipped)
        metrics.update({"policy_loss": float(pg.detach().sum()), "value_loss": float(vf.detach().sum()),
                        "vf_clipfrac": float(vf_clipped.sum())})
        metrics.update(row_metrics(batch, weight))
        return LossOutput(loss=loss, weight=weight, metrics=metrics)
