"""align.shared_prefix: one merged row per pair gives the same log-probs and gradients as 2B separate rows."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_objectives_pairwise import _tiny, load_pairs
from tunesmith.data.pair_layout import shared_prefix_layout
from tunesmith.data.preference import rejected_to_divergence
from tunesmith.objectives.dpo import DPOObjective
from tunesmith.objectives.logprobs import FrozenCopyReference, batch_logps, shares_prefix
from tunesmith.training.pairwise import pairwise_batch

PAIRS = [  # different prompt lengths; answers that differ at once, late, or where one is a prefix of the other
    {"prompt": "What is 2 + 2?", "chosen": "Four.", "rejected": "I do not know, sorry."},
    {"prompt": "Book it", "chosen": '{"name": "Ana", "time": null, "size": 4}', "rejected": '{"name": "Ana", "time": "19:00", "size": 4}'},
    {"prompt": "Say hi to the whole team, politely please", "chosen": "Hi everyone, and thank you!", "rejected": "Hi everyone"},
    {"prompt": "Largest ocean?", "chosen": "The Pacific.", "rejected": "The Pacific Ocean, which covers a third of the planet."},
]


@pytest.fixture()
def pairs(tmp_path, tokenizer):
    return load_pairs(tmp_path, tokenizer, PAIRS)


def test_layout_holds_each_shared_prefix_once_and_maps_every_token_back(pairs):
    batch = pairwise_batch(pairs, pad_id=2)
    layout = shared_prefix_layout(batch["input_ids"], batch["labels"], pad_id=2)
    B = len(pairs)
    ids, index, pair = layout["shared_input_ids"], layout["shared_index"], layout["shared_pair"]
    for row in range(2 * B):  # every token a log-prob reads (up to the last label) sits at its place
        labelled = (batch["labels"][row] != -100).nonzero().flatten()
        needed = int(labelled[-1])
        original = batch["input_ids"][row, :needed]
        assert torch.equal(ids[pair[row], index[row, :needed]], original), row
        assert torch.equal(layout["shared_position_ids"][pair[row], index[row, :needed]], torch.arange(needed))
    real = int(batch["attention_mask"].sum())
    merged = sum(int(max(index[b].max(), index[B + b].max())) + 1 for b in range(B))
    assert merged < 0.7 * real  # the prompts (and shared answer starts) are run once
    # the rejected tail never sees the chosen tail: pair 1 diverges inside the answer
    p1c, p1r = batch["input_ids"][1], batch["input_ids"][B + 1]
    first = int((p1c != p1r).nonzero()[0])
    tail_at = int(index[B + 1, first])
    assert tail_at > int(index[1, first]) and not layout["shared_mask"][1, tail_at, first:tail_at].any()
    assert layout["shared_mask"][1, tail_at, :first].all()


@pytest.mark.parametrize("divergence", [False, True])
def test_shared_prefix_logps_and_gradients_equal_separate_rows(tiny_model_dir, pairs, divergence):
    if divergence:
        pairs = [rejected_to_divergence(p) for p in pairs]
    model = _tiny(tiny_model_dir, lora=True)
    weights = torch.linspace(-1.0, 2.0, 2 * len(pairs))  # row-dependent upstream gradient, as in DPO
    results = []
    for shared in (False, True):
        batch = pairwise_batch(pairs, pad_id=2, shared_prefix=shared)
        model.zero_grad()
        logps, counts = batch_logps(model, batch)
        (logps * weights).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((logps.detach(), counts, grads))
    (plain, plain_counts, plain_grads), (merged, merged_counts, merged_grads) = results
    assert torch.equal(plain_counts, merged_counts) and plain_grads
    torch.testing.assert_close(merged, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(plain_grads, merged_grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_dpo_loss_with_shared_prefix_equals_separate_rows_for_eager_and_frozen_reference(tiny_model_dir, pairs):
    model = _tiny(tiny_model_dir, lora=False)
    ref = FrozenCopyReference(model)
    with torch.no_grad():  # move the policy so rewards are not all zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    objective = DPOObjective(beta=0.5, sft_alpha=1.0)
    outs = []
    for impl in ("sdpa", "eager"):
        for shared in (False, True):
            for m in (model, ref.model):
                m.config._attn_implementation = impl
            with torch.no_grad():
                outs.append(objective(model, pairwise_batch(pairs, pad_id=2, shared_prefix=shared), ref=ref))
    for plain, merged in (outs[0:2], outs[2:4]):  # per attention implementation: separate rows vs merged
        assert float(merged.loss) == pytest.approx(float(plain.loss), rel=1e-5, abs=1e-5)
        # margins are beta x differences of fp32 log-prob sums (~500 here): a few ulps of those sums is the floor
        scale = max(abs(plain.metrics["logps/chosen"]), abs(plain.metrics["logps/rejected"]))
        tol = objective.beta * 4 * torch.finfo(torch.float32).eps * scale
        assert merged.metrics["rewards/margins"] == pytest.approx(plain.metrics["rewards/margins"], abs=tol)
    assert float(outs[2].loss) == pytest.approx(float(outs[0].loss), abs=1e-4)  # sdpa vs eager: float noise only
    assert abs(outs[0].metrics["rewards/margins"]) > 1e-3


def test_attention_without_4d_masks_falls_back_to_separate_rows(tiny_model_dir, pairs, monkeypatch):
    model = _tiny(tiny_model_dir, lora=False)
    batch = pairwise_batch(pairs, pad_id=2, shared_prefix=True)
    assert shares_prefix(model, batch) and not shares_prefix(model, pairwise_batch(pairs, pad_id=2))
    monkeypatch.setattr(model.config, "_attn_implementation", "flash_attention_2")
    assert not shares_prefix(model, batch)
