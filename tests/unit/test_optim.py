"""Learning-rate schedules: pinned values for warmup, cosine, linear and constant."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.config.schema import TrainConfig
from tunesmith.training.optim import build_optimizer, build_scheduler, lr_factor


def test_warmup_is_linear_from_first_step():
    assert [lr_factor(s, 100, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_decay_pinned():
    assert lr_factor(4, 104, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(54, 104, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(104, 104, 4, "cosine") == pytest.approx(0.0)
    assert lr_factor(29, 104, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_linear_and_min_ratio_and_constant():
    assert lr_factor(50, 100, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, "linear", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(77, 100, 10, "constant") == 1.0


def test_scheduler_drives_optimizer_lr():
    model = torch.nn.Linear(4, 4)
    cfg = TrainConfig(lr=1e-3, warmup_ratio=0.1, scheduler="linear")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(5e-4) and seen[1] == pytest.approx(1e-3)
    assert seen[-1] == pytest.approx(1e-3 * (1 - 17 / 18))


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(model[0].weight)] == 0.1
    assert decays[id(model[0].bias)] == 0.0 and decays[id(model[1].weight)] == 0.0


def test_fused_adamw_matches_the_reference_loop():
    """build_optimizer takes torch's fused AdamW kernel on the CPU; 20 steps of it (with weight decay, a schedule
    and changing gradients) land on the same weights as torch's per-tensor reference loop, to float rounding."""
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 8))
    fused = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 8))
    fused.load_state_dict(reference.state_dict())
    start = [p.detach().clone() for p in fused.parameters()]
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    opt = build_optimizer(fused, cfg)
    assert all(g["fused"] for g in opt.param_groups)
    sched = build_scheduler(opt, cfg, total_steps=20)
    groups = [{"params": [p for p in reference.parameters() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in reference.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    ref_opt = torch.optim.AdamW(groups, lr=1e-2, betas=cfg.betas, foreach=False)
    ref_sched = build_scheduler(ref_opt, cfg, total_steps=20)
    x = torch.randn(16, 32)
    for _ in range(20):
        for model, optimizer, schedule in ((reference, ref_opt, ref_sched), (fused, opt, sched)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
            schedule.step()
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] < 1e-2
    for a, b, s in zip(reference.parameters(), fused.parameters(), start):
        assert (b - s).abs().max() > 1e-3  # every tensor really moved
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
