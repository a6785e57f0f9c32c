"""Packing: same documents, same loss and gradients as padding (fp32, 1e-5), no attention across documents."""

from __future__ import annotations

import random

import pytest
import torch

from tunesmith.data.collate import length_grouped_order, pad_batch
from tunesmith.data.packing import first_fit_decreasing, pack_batch, packing_stats
from tunesmith.data.templates import Example
from tunesmith.objectives.sft import supervised_ce_sum
from tunesmith.training.batches import SFTBatchSource


def make_examples(n: int, seed: int = 0, vocab: int = 400) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        length = rng.randint(6, 40)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        out.append(Example(ids, [-100] * prompt + ids[prompt:], "mem", k + 1, False))
    return out


@pytest.fixture(scope="module")
def tiny_fp32(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def test_first_fit_decreasing_fills_bins_and_keeps_every_index():
    bins = first_fit_decreasing([5, 3, 8, 2, 6, 1], capacity=10)
    assert bins == [[2, 3], [4, 1, 5], [0]]  # 8+2, 6+3+1, 5
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert first_fit_decreasing([12, 3], 10) == [[0], [1]]  # oversize gets its own bin


def test_pack_batch_layout_positions_and_masked_first_labels():
    rows = [Example([5, 6, 7], [-100, 6, 7], "f", 1, False), Example([8, 9], [8, 9], "f", 2, False),
            Example([4, 4, 4, 4], [-100, -100, 4, 4], "f", 3, False)]
    packed = pack_batch(rows, pad_id=0, capacity=6)
    # FFD: [len4 + len2] then [len3] (width 6)
    assert packed["input_ids"].tolist() == [[4, 4, 4, 4, 8, 9], [5, 6, 7, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert packed["labels"].tolist() == [[-100, -100, 4, 4, -100, 9], [-100, 6, 7, -100, -100, -100]]
    assert packed["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert int(packed["num_target_tokens"]) == int(pad_batch(rows, 0)["num_target_tokens"]) == 5


def _loss_and_grads(model, batch):
    """Token-mean loss (what the loop trains on) and its gradients."""
    model.zero_grad(set_to_none=True)
    loss, count = supervised_ce_sum(model, batch["input_ids"], batch.get("attention_mask"), batch["labels"],
                                    batch.get("position_ids"), chunk_size=16)
    loss = loss / count
    loss.backward()
    return loss.detach(), count, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_equals_padded_loss_and_gradients(tiny_fp32):
    examples = make_examples(8, seed=1)
    padded = pad_batch(examples, pad_id=2)
    packed = pack_batch(examples, pad_id=2, capacity=64)
    assert packed["input_ids"].shape[0] < len(examples)  # really packed several documents per row
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    loss_a, n_a, grads_a = _loss_and_grads(tiny_fp32, padded)
    loss_b, n_b, grads_b = _loss_and_grads(tiny_fp32, packed)
    assert n_a == n_b
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-5), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5), name


def test_attention_does_not_cross_documents(tiny_fp32):
    """Changing document 1 must not change document 2's logits when both share a row."""
    a = Example([10, 11, 12, 13], [10, 11, 12, 13], "f", 1, False)
    b = Example([20, 21, 22], [20, 21, 22], "f", 2, False)
    a2 = Example([30, 31, 32, 33], [30, 31, 32, 33], "f", 1, False)
    outs = []
    for first in (a, a2):
        batch = pack_batch([first, b], pad_id=2, capacity=8)
        with torch.no_grad():
            logits = tiny_fp32(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        outs.append(logits[0, 4:7])
    with torch.no_grad():
        alone = tiny_fp32(input_ids=torch.tensor([[20, 21, 22]])).logits[0]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(outs[0], alone, atol=1e-5)


def test_packed_source_sees_every_row_once_per_epoch():
    examples = make_examples(53, seed=2)
    source = SFTBatchSource(examples, batch_size=8, pad_id=2, seed=0, group_by_length=True, pack_to=64)
    for epoch in range(2):
        seen = []
        for index in range(source.batches_per_epoch()):
            batch = source.batch(epoch, index)
            assert batch["input_ids"].shape[1] <= 64
            seen += source.order(epoch)[index]
        assert sorted(seen) == list(range(53))
        total = sum(int(source.batch(epoch, i)["attention_mask"].sum()) for i in range(source.batches_per_epoch()))
        assert total == sum(len(e.input_ids) for e in examples)


def test_packing_stats_counts_less_layout_than_padding():
    lengths = [random.Random(3).randint(5, 500) for _ in range(200)]
    batches = length_grouped_order(lengths, 8, seed=0, epoch=0)
    stats = packing_stats(lengths, batches, capacity=512)
    assert stats["real_tokens"] == sum(lengths)
    assert stats["real_tokens"] <= stats["packed_tokens"] <= stats["padded_tokens"]


# Other speed switches of `train` must not change the maths either.


def _lora_grads(tiny_model_dir, train_overrides: dict):
    from tunesmith.config.schema import RunConfig
    from tunesmith.models.adapters import apply_method
    from tunesmith.objectives.sft import SFTObjective
    from tunesmith.training.run import apply_speed_options
    from transformers import AutoModelForCausalLM

    cfg = RunConfig.model_validate({"model": {"name_or_path": str(tiny_model_dir), "dtype": "fp32"},
                                    "train": train_overrides})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False
    torch.manual_seed(0)
    model = apply_method(model, cfg.method)
    for name, p in model.named_parameters():  # non-zero B so every LoRA weight gets a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    objective = SFTObjective()
    apply_speed_options(model, cfg, objective)
    blocks = model.get_base_model().model.layers
    objective.checkpointed = [bool(b.gradient_checkpointing) for b in blocks]
    model.train()
    out = objective(model, pad_batch(make_examples(6, seed=4), pad_id=2))
    (out.loss / out.weight).backward()
    return (objective.chunk_size, objective.checkpointed), out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("every", [1, 2])
def test_gradient_checkpointing_and_chunk_size_keep_loss_and_gradients(tiny_model_dir, every):
    chunk0, base_loss, base = _lora_grads(tiny_model_dir, {})
    chunk1, loss, grads = _lora_grads(tiny_model_dir, {"gradient_checkpointing": True, "checkpoint_every": every, "ce_chunk_size": 5})
    assert chunk0 == (1024, [False, False])
    assert chunk1 == (5, [True, True] if every == 1 else [True, False])  # really recomputing
    assert torch.allclose(base_loss, loss, rtol=1e-5, atol=1e-5)
    assert len(base) == len(grads) > 0
    for name in base:
        assert torch.allclose(base[name], grads[name], rtol=1e-5, atol=1e-5), name


@pytest.mark.slow
def test_compiled_blocks_keep_loss_and_gradients(tiny_model_dir):
    _, base_loss, base = _lora_grads(tiny_model_dir, {})
    _, loss, grads = _lora_grads(tiny_model_dir, {"compile": True})
    assert torch.allclose(base_loss, loss, rtol=1e-4, atol=1e-5)
    for name in base:
        assert torch.allclose(base[name], grads[name], rtol=1e-4, atol=1e-4), name
