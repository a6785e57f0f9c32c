"""Advantage estimation for online RL: per-token KL-shaped rewards, GAE, whitening, group normalisation.

Pure tensor functions (no model), checked against plain Python loops in tests/unit/test_advantages.py.

- Per-token reward (Ziegler et al. 2019, Eq. 2; Ouyang et al. 2022; Huang et al. 2024, "The N Implementation
  Details of RLHF with PPO", details 3-4): r_t = -β_KL·(logπ(y_t) - logπ_ref(y_t)), plus the reward-model
  score on the last real token (the EOS).
- GAE (Schulman et al. 2016, Eq. 16): δ_t = r_t + γ V_{t+1} - V_t, A_t = Σ_l (γλ)^l δ_{t+l}; returns A_t + V_t.
- Whitening (Huang et al. 2024, detail 8): (x - mean) / sqrt(var + 1e-8) over the real tokens of the whole
  rollout, with the unbiased variance as in OpenAI's lm-human-preferences and TRL's `masked_whiten`.
- Group normalisation (Shao et al. 2024, DeepSeekMath GRPO, §4.1.2): A_i = (r_i - mean(r_group)) /
  (std(r_group) + 1e-4), the same value on every token of response i.
- Adaptive KL coefficient (Ziegler et al. 2019, §2.2; TRL's AdaptiveKLController): after each rollout with
  mean per-response KL KL_t, e_t = clip(KL_t / KL_target - 1, -0.2, 0.2) and β ← β·(1 + e_t·n / horizon),
  n = samples in the rollout. A fixed β when no target is set.

Tensors are (N, L): N responses, L response positions, right-padded; `mask` is 1 on real tokens.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the real tokens; Bessel-corrected like TRL (a single token has variance 0)."""
    n = mask.sum()
    centred = (values - masked_mean(values, mask)) * mask
    var = (centred**2).sum() / n.clamp(min=1)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) over real tokens; padding stays 0. Keeps the mean if not shift_mean."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_shaped_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """(N, L) per-token rewards: -kl_coef·(logπ - logπ_ref), with scores (N,) added at each row's last real token."""
    rewards = -kl_coef * (logps - ref_logps) * mask
    last = (mask.long().cumsum(dim=1).argmax(dim=1))  # (N,): index of the last real token
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each (N, L); V after the last real token is 0 (the episode ends there)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """(N,) GRPO advantages; rows [g*G, (g+1)*G) are the G samples of prompt g. Unbiased std as in TRL."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)  # (num_prompts, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred)
        centred = centred / (std + eps)
    return centred.reshape(-1)


def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) the reward std of each row's group (a metric: 0 means the group carries no learning signal)."""
    grouped = rewards.view(-1, group_size)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
    return std.expand_as(grouped).reshape(-1)


class KLController:
    """The KL coefficient β: fixed, or adapted towards `target` nats per response (Ziegler et al. 2019, §2.2)."""

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, samples: int) -> float:
        """Adjust β after a rollout whose responses averaged `kl` nats of KL; returns the new β."""
        if self.target is not None and self.target > 0:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * samples / self.horizon
        return self.value
