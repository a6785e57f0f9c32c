"""Cross-checks against TRL (test-only dependency): identical log-probs in, losses must agree to 1e-6.

TRL 1.x computes the DPO and KTO losses inline in `_compute_loss` from a model's per-token log-probs, so we
call that method on a bare trainer object holding only the settings it reads, with a log-prob source that
returns fixed per-token log-probs (the loss maths is what is compared; our log-prob extraction is checked
against a plain full-softmax computation in test_objectives_logprobs.py). CPO/SimPO and ORPO expose their
loss as methods taking sequence log-probs; the reward loss is checked against RewardTrainer.compute_loss.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")

from tunesmith.objectives.dpo import PairLogps, dpo_losses  # noqa: E402
from tunesmith.objectives.kto import kl_baseline, kto_losses  # noqa: E402
from tunesmith.objectives.orpo import odds_ratio_terms  # noqa: E402
from tunesmith.objectives.rm import bradley_terry_losses  # noqa: E402
from tunesmith.objectives.simpo import simpo_losses  # noqa: E402

B, T = 6, 12


class FixedLogProbs(torch.nn.Module):
    """Stands in for a model under TRL's fused LM head: returns the given per-token log-probs (zero where masked)."""

    def __init__(self, per_token: torch.Tensor):
        super().__init__()
        self.per_token = per_token
        self.training = True

    def forward(self, input_ids=None, labels=None, **kwargs):
        mask = labels[:, 1:] != -100
        values = self.per_token[: input_ids.shape[0]] * mask
        zeros = torch.zeros_like(values)
        return SimpleNamespace(log_probs=values, entropy=zeros, mean_logits=zeros, is_top1=mask & False, aux_loss=None)


def _sequences(rows: int, seed: int):
    """Per-token log-probs (rows, T-1) and completion masks (rows, T) with varied prompt/response lengths."""
    g = torch.Generator().manual_seed(seed)
    per_token = -torch.rand(rows, T - 1, generator=g, dtype=torch.float64) * 3
    completion = torch.zeros(rows, T, dtype=torch.long)
    for r in range(rows):
        start = int(torch.randint(2, 6, (1,), generator=g))
        end = int(torch.randint(start + 1, T + 1, (1,), generator=g))
        completion[r, start:end] = 1
    mask = completion[:, 1:].bool()
    return per_token * mask, completion, per_token.mul(mask).sum(1), mask.sum(1).double()


def _dpo_trainer(loss_type: str, beta: float, label_smoothing: float, model) -> object:
    from accelerate import Accelerator
    from trl.trainer.dpo_trainer import DPOTrainer

    t = object.__new__(DPOTrainer)
    t.__dict__.update(
        accelerator=Accelerator(cpu=True), aux_loss_enabled=False, precompute_ref_logps=True, ld_alpha=None,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=label_smoothing, use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1, ref_model=None, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )
    t.__dict__["model"] = model
    return t


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_dpo_variants_match_trl(loss_type, label_smoothing):
    per_token, completion, logps, counts = _sequences(2 * B, seed=1)
    ref = logps + torch.randn(2 * B, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = FixedLogProbs(per_token)
    trainer = _dpo_trainer(loss_type, 0.3, label_smoothing, model)
    inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
              "completion_mask": completion, "ref_chosen_logps": ref[:B], "ref_rejected_logps": ref[B:]}
    theirs = trainer._compute_loss(model, inputs, return_outputs=False)
    p = PairLogps(logps[:B], logps[B:], ref[:B], ref[B:], counts[:B], counts[B:])
    ours = dpo_losses(p, 0.3, loss_type, label_smoothing)
    assert float(ours.mean()) == pytest.approx(float(theirs), abs=1e-6)
    m = trainer._metrics["train"]
    rc, rr = 0.3 * (p.chosen - p.ref_chosen), 0.3 * (p.rejected - p.ref_rejected)
    assert m["rewards/chosen"][0] == pytest.approx(float(rc.mean()), abs=1e-6)
    assert m["rewards/margins"][0] == pytest.approx(float((rc - rr).mean()), abs=1e-6)
    assert m["rewards/accuracies"][0] == pytest.approx(float((rc > rr).double().mean()), abs=1e-6)


def test_rpo_sft_term_matches_trl_with_equal_lengths():
    """Our RPO term is NLL/|y_w| per pair; TRL's 'sft' loss is a token mean over the batch: equal for equal lengths."""
    per_token, completion, logps, counts = _sequences(2 * B, seed=3)
    completion[:] = 0
    completion[:, 4:10] = 1
    per_token = per_token.abs().neg() * completion[:, 1:]
    per_token[per_token == 0] = 0.0
    logps, counts = per_token.sum(1), completion[:, 1:].sum(1).double()
    model = FixedLogProbs(per_token)
    trainer = _dpo_trainer("sigmoid", 0.1, 0.0, model)
    trainer.loss_types, trainer.loss_weights = ["sigmoid", "sft"], [1.0, 0.5]
    inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
              "completion_mask": completion, "ref_chosen_logps": logps[:B] * 0.9, "ref_rejected_logps": logps[B:] * 1.1}
    theirs = trainer._compute_loss(model, inputs, return_outputs=False)
    p = PairLogps(logps[:B], logps[B:], logps[:B] * 0.9, logps[B:] * 1.1, counts[:B], counts[B:])
    ours = dpo_losses(p, 0.1) + 0.5 * (-p.chosen / p.chosen_len)
    assert float(ours.mean()) == pytest.approx(float(theirs), abs=1e-6)


def test_simpo_matches_trl_cpo_simpo():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    g = torch.Generator().manual_seed(4)
    chosen_avg, rejected_avg = -torch.rand(B, generator=g, dtype=torch.float64) * 2, -torch.rand(B, generator=g, dtype=torch.float64) * 2
    for ls in (0.0, 0.1):
        me = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.7, beta=2.5, label_smoothing=ls, accelerator=SimpleNamespace(device="cpu"))
        theirs, _, _ = CPOTrainer.cpo_loss(me, chosen_avg, rejected_avg)
        ours = simpo_losses(chosen_avg, rejected_avg, 2.5, 0.7, ls)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_orpo_odds_ratio_matches_trl():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    g = torch.Generator().manual_seed(5)
    chosen_avg = -torch.rand(B, generator=g, dtype=torch.float64) * 3 - 1e-3
    rejected_avg = -torch.rand(B, generator=g, dtype=torch.float64) * 3 - 1e-3
    me = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    losses, _, _, mean_ratio, mean_log_odds = ORPOTrainer.odds_ratio_loss(me, chosen_avg, rejected_avg)
    ratio, log_odds = odds_ratio_terms(chosen_avg, rejected_avg)
    torch.testing.assert_close(0.1 * ratio, losses.double(), atol=1e-6, rtol=0)  # TRL returns β·log σ(log odds)
    assert float(log_odds.mean()) == pytest.approx(float(mean_log_odds), abs=1e-6)


def test_kto_matches_trl():
    from accelerate import Accelerator
    from trl.trainer.kto_trainer import KTOTrainer

    per_token, completion, logps, _ = _sequences(B, seed=6)
    kl_per_token, kl_completion, kl_logps, _ = _sequences(B, seed=7)
    g = torch.Generator().manual_seed(8)
    ref, ref_kl = logps - torch.rand(B, generator=g, dtype=torch.float64), kl_logps - torch.rand(B, generator=g, dtype=torch.float64)
    labels = torch.tensor([True, False, True, True, False, False])

    class Both(FixedLogProbs):  # KTO calls the model on the main rows and on the KL rows
        def forward(self, input_ids=None, labels=None, **kwargs):
            self.per_token = kl_per_token if input_ids[0, 0] == 7 else per_token
            return super().forward(input_ids=input_ids, labels=labels)

    model = Both(per_token)
    t = object.__new__(KTOTrainer)
    t.__dict__.update(accelerator=Accelerator(cpu=True), calculate_KL=True, aux_loss_enabled=False, precompute_ref_logps=True,
                      loss_type="kto", beta=0.2, desirable_weight=1.3, undesirable_weight=0.8, ref_model=None,
                      _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
                      args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    t.__dict__["model"] = model
    inputs = {"input_ids": torch.ones(B, T, dtype=torch.long), "attention_mask": torch.ones(B, T, dtype=torch.long),
              "completion_mask": completion, "KL_input_ids": torch.full((B, T), 7), "KL_attention_mask": torch.ones(B, T, dtype=torch.long),
              "KL_completion_mask": kl_completion, "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    theirs = t._compute_loss(model, inputs, return_outputs=False)
    kl = kl_baseline(kl_logps, ref_kl)
    ours = kto_losses(logps - ref, labels, kl, 0.2, 1.3, 0.8)
    # TRL orders desirable rows first, then undesirable, and takes the mean: the same number
    assert float(ours.mean()) == pytest.approx(float(theirs), abs=1e-6)
    assert float(kl) == pytest.approx(t._metrics["train"]["kl"][0], abs=1e-6)


def test_reward_loss_matches_trl_with_margin_and_centering():
    from accelerate import Accelerator
    from trl.trainer.reward_trainer import RewardTrainer

    g = torch.Generator().manual_seed(9)
    scores = torch.randn(2 * B, 1, generator=g, dtype=torch.float64) * 2
    margin = torch.rand(B, generator=g, dtype=torch.float64)

    class Scores(torch.nn.Module):
        def forward(self, **kwargs):
            return SimpleNamespace(logits=scores)

    t = object.__new__(RewardTrainer)
    t.__dict__.update(accelerator=Accelerator(cpu=True), args=SimpleNamespace(center_rewards_coefficient=0.01),
                      _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    t.__dict__["model"] = SimpleNamespace(training=True)
    theirs = t.compute_loss(Scores(), {"attention_mask": torch.ones(2 * B, 3), "margin": margin})
    ours = bradley_terry_losses(scores[:B, 0], scores[B:, 0], margin, center_coef=0.01)
    assert float(ours.mean()) == pytest.approx(float(theirs), abs=1e-6)
    assert t._metrics["train"]["accuracy"][0] == pytest.approx(float((scores[:B] > scores[B:]).double().mean()))
