"""Advantage maths (objectives/advantages.py) and the PPO/GRPO losses against plain Python loops and pinned numbers."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.objectives import advantages as adv
from tunesmith.objectives.grpo import k3_kl
from tunesmith.objectives.ppo import policy_losses, value_losses

# Two responses: 4 real tokens, and 2 real tokens + 2 padding.
MASK = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
REWARDS = torch.tensor([[0.1, -0.2, 0.05, 1.0], [0.3, -0.5, 9.0, 9.0]])  # padding values must be ignored
VALUES = torch.tensor([[0.5, 0.4, 0.3, 0.2], [-0.1, 0.2, 7.0, 7.0]])


def loop_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Textbook GAE for one episode (Schulman 2016, Eq. 16), V after the end = 0."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        running = rewards[t] + gamma * next_value - values[t] + gamma * lam * running
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_a_python_loop_per_episode(gamma, lam):
    got_adv, got_ret = adv.gae(REWARDS, VALUES, MASK, gamma, lam)
    for row in range(2):
        n = int(MASK[row].sum())
        want_adv, want_ret = loop_gae(REWARDS[row, :n].tolist(), VALUES[row, :n].tolist(), gamma, lam)
        assert got_adv[row, :n].tolist() == pytest.approx(want_adv, abs=1e-6)
        assert got_ret[row, :n].tolist() == pytest.approx(want_ret, abs=1e-6)
        assert got_adv[row, n:].abs().sum() == 0 and got_ret[row, n:].abs().sum() == 0


def test_gae_pinned_values():
    got, _ = adv.gae(REWARDS, VALUES, MASK, 1.0, 0.95)
    # row 1: delta_1 = -0.5 - 0.2 = -0.7; delta_0 = 0.3 + 0.2 + 0.1 = 0.6 -> A_0 = 0.6 + 0.95 * -0.7 = -0.065
    assert got[1, :2].tolist() == pytest.approx([-0.065, -0.7], abs=1e-6)
    # row 0: deltas 0, -0.3, -0.05, 0.8 -> A_3 = 0.8, A_2 = -0.05 + 0.95*0.8 = 0.71, A_1 = 0.3745, A_0 = 0.355775
    assert got[0].tolist() == pytest.approx([0.355775, 0.3745, 0.71, 0.8], abs=1e-6)


def test_whiten_matches_loop_with_unbiased_variance():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, -2.0, 99.0, 99.0]])
    real = [1.0, 2.0, 3.0, 4.0, 10.0, -2.0]
    mean = sum(real) / 6
    var = sum((x - mean) ** 2 for x in real) / 5  # Bessel-corrected, as TRL's masked_var
    got = adv.whiten(values, MASK)
    want = [(x - mean) / math.sqrt(var + 1e-8) for x in real]
    assert got[MASK.bool()].tolist() == pytest.approx(want, abs=1e-6)
    assert got[1, 2:].tolist() == [0.0, 0.0]
    assert float(got[MASK.bool()].mean()) == pytest.approx(0.0, abs=1e-6)
    kept = adv.whiten(values, MASK, shift_mean=False)
    assert float(kept[MASK.bool()].mean()) == pytest.approx(mean, abs=1e-5)


def test_kl_shaped_rewards_put_the_score_on_the_last_real_token():
    logps = torch.tensor([[-1.0, -2.0, -0.5, -0.1], [-0.3, -0.2, -5.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, -0.7, -0.1], [-0.3, -0.4, -1.0, -1.0]])
    got = adv.kl_shaped_rewards(torch.tensor([2.0, -1.0]), logps, ref, MASK, kl_coef=0.1)
    assert got[0].tolist() == pytest.approx([-0.05, 0.0, -0.02, 2.0], abs=1e-6)
    assert got[1].tolist() == pytest.approx([0.0, -1.02, 0.0, 0.0], abs=1e-6)


def test_group_advantages_match_a_loop_and_pinned_numbers():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    got = adv.group_advantages(rewards, group_size=4)
    want = []
    for g in range(2):
        group = rewards[4 * g : 4 * g + 4].tolist()
        mean = sum(group) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / 3)  # torch.std is unbiased, as DeepSeekMath/TRL
        want += [(x - mean) / (std + 1e-4) for x in group]
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    assert got[:4].tolist() == pytest.approx([1.2245, -1.2245, 0.0, 0.0], abs=1e-4)
    assert got[4:].tolist() == [0.0] * 4  # a group with equal rewards carries no signal
    assert adv.group_advantages(rewards, 4, scale=False)[:2].tolist() == pytest.approx([0.5, -0.5])
    assert adv.group_std(rewards, 4).tolist() == pytest.approx([0.408248] * 4 + [0.0] * 4, abs=1e-5)
    with pytest.raises(ValueError):
        adv.group_advantages(rewards, 3)


def test_ppo_clipped_policy_loss_pinned():
    logps = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    old = torch.log(torch.tensor([0.25, 0.25, 0.6, 0.5]))  # ratios 2.0, 2.0, 0.8333, 1.0
    advantages = torch.tensor([1.0, -1.0, 1.0, -2.0])
    losses, clipped = policy_losses(logps, old, advantages, cliprange=0.2)
    # A>0, ratio 2 -> clipped to 1.2: -1.2; A<0, ratio 2 -> unclipped -(-1)*2 = 2 is larger; ratio 0.833 inside; ratio 1
    assert losses.tolist() == pytest.approx([-1.2, 2.0, -0.833333, 2.0], abs=1e-5)
    assert clipped.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_ppo_clipped_value_loss_pinned():
    values = torch.tensor([1.0, 0.0, 0.5])
    old = torch.tensor([0.5, 0.5, 0.5])
    returns = torch.tensor([2.0, 0.0, 0.4])
    losses, clipped = value_losses(values, old, returns, cliprange_value=0.2)
    # 1: V clipped to 0.7 -> 0.5*max(1, 1.69) = 0.845; 2: V clipped to 0.3 -> 0.5*max(0, 0.09) = 0.045; 3: inside -> 0.005
    assert losses.tolist() == pytest.approx([0.845, 0.045, 0.005], abs=1e-6)
    assert clipped.tolist() == [1.0, 1.0, 0.0]


def test_k3_kl_is_zero_at_the_reference_and_pinned():
    logps = torch.tensor([-1.0, -1.0, -2.0])
    ref = torch.tensor([-1.0, -2.0, -1.0])
    # exp(d) - d - 1 with d = ref - logp: 0; exp(-1)+1-1 = 0.367879; exp(1)-1-1 = 0.718282
    assert k3_kl(logps, ref).tolist() == pytest.approx([0.0, 0.367879, 0.718282], abs=1e-6)
