"""Preference objectives on a real tiny model: log-probs, DPO at step 0, references, accumulation invariance, RM head."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.config.schema import LoraConfig, MethodConfig
from tunesmith.data.preference import load_preference_examples
from tunesmith.data.templates import resolve_template
from tunesmith.models.adapters import apply_method
from tunesmith.models.heads import attach_head, last_token_index, reward_scores
from tunesmith.objectives import build_objective
from tunesmith.objectives.dpo import DPOObjective
from tunesmith.objectives.logprobs import AdapterDisabledReference, FrozenCopyReference, build_reference, sequence_logps
from tunesmith.training.loop import train_step
from tunesmith.training.pairwise import PairwiseBatchSource, UnpairedBatchSource, pairwise_batch, unpaired_batch

PAIRS = [
    {"prompt": "What is 2 + 2?", "chosen": "Four.", "rejected": "I do not know, sorry."},
    {"prompt": "Capital of Italy?", "chosen": "Rome is the capital.", "rejected": "Paris."},
    {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
    {"prompt": "Largest ocean?", "chosen": "The Pacific Ocean.", "rejected": "The pond behind my house, I think."},
]


def load_pairs(tmp_path, tokenizer, rows: list[dict]):
    """Tokenised pairs of `rows`, read from a JSONL file as training reads them."""
    import json

    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    resolve_template(tokenizer, "auto")
    return load_preference_examples(str(path), tokenizer, "pairwise", max_length=128)


@pytest.fixture()
def pairs(tmp_path, tokenizer):
    return load_pairs(tmp_path, tokenizer, PAIRS)


def _tiny(tiny_model_dir, lora: bool):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    method = MethodConfig(kind="lora", lora=LoraConfig(r=4, alpha=8)) if lora else MethodConfig(kind="full")
    model = apply_method(model, method)
    if lora:  # a non-zero adapter, so the policy differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
    return model


def test_sequence_logps_equal_full_softmax_sum_over_response(tiny_model_dir, pairs):
    model = _tiny(tiny_model_dir, lora=False).eval()
    batch = pairwise_batch(pairs, pad_id=2)
    ours, counts = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours.detach(), (token * mask).sum(1), atol=1e-4, rtol=1e-5)
    expected = [sum(1 for l in e.labels if l != -100) for e in [p.chosen for p in pairs] + [p.rejected for p in pairs]]
    assert counts.tolist() == expected and all(c > 1 for c in expected)


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_logps_equal_one_piece_values_and_gradients(tiny_model_dir, pairs, monkeypatch, lora):
    """The LM head runs in chunks (trainable head: checkpointed; frozen head under LoRA: gradients computed in
    forward, scaled per token in backward): same log-probs and same gradients as one piece."""
    from tunesmith.objectives import logprobs

    model = _tiny(tiny_model_dir, lora=lora)
    batch = pairwise_batch(pairs, pad_id=2)
    weights = torch.linspace(-1.0, 2.0, batch["input_ids"].shape[0])  # row-dependent upstream gradient, as in DPO
    results = []
    for chunk in (0, 3):
        monkeypatch.setattr(logprobs, "CHUNK", chunk)
        model.zero_grad()
        logps, _ = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        (logps * weights).sum().backward()
        results.append((logps.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-6)  # fp32 sums of ~100
    for one, chunked in zip(results[0][1], results[1][1]):  # fp32 sums in another order: compare as whole tensors
        assert (one - chunked).norm() <= 1e-5 * one.norm()


@pytest.mark.parametrize("lora", [True, False])
def test_dpo_step0_is_ln2_with_zero_accuracy_and_margin(tiny_model_dir, pairs, lora):
    model = _tiny(tiny_model_dir, lora=lora)
    ref = build_reference(model, "auto")
    assert isinstance(ref, AdapterDisabledReference if lora else FrozenCopyReference)
    if lora:  # π = π_ref at step 0 means a zero adapter, as peft initialises it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.zeros_(p)
    out = DPOObjective(beta=0.1)(model, pairwise_batch(pairs, pad_id=2), ref=ref)
    n = len(pairs)
    assert out.weight == n
    assert float(out.loss.detach()) / n == pytest.approx(math.log(2), abs=1e-7)
    assert out.metrics["rewards/accuracies"] == 0.0 and out.metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-7)
    assert out.metrics["logps/chosen"] < 0


def test_adapter_disabled_reference_is_the_base_model_in_eval_mode(tiny_model_dir, pairs):
    from transformers import AutoModelForCausalLM

    model = _tiny(tiny_model_dir, lora=True)
    model.train()
    batch = pairwise_batch(pairs, pad_id=2)
    ref_logps = AdapterDisabledReference(model).logps(batch)
    assert model.training and not ref_logps.requires_grad  # train mode restored, no graph
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logps = sequence_logps(base, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
        policy_logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    torch.testing.assert_close(ref_logps, base_logps, atol=1e-5, rtol=1e-5)
    assert (policy_logps - base_logps).abs().max() > 1e-3  # the adapter does change the policy


@pytest.mark.parametrize("name", ["dpo", "simpo", "orpo", "rm"])
def test_pairwise_accumulation_invariance(tiny_model_dir, pairs, name):
    """batch 4 x accum 1 gives the same loss and gradient as batch 1 x accum 4 (sums / window pairs)."""
    grads, losses = [], []
    for batch_size in (4, 1):
        model = _tiny(tiny_model_dir, lora=True)
        objective = build_objective(name)
        if hasattr(objective, "prepare"):
            torch.manual_seed(1)
            objective.prepare(model)
        ref = build_reference(model, "auto") if objective.needs_reference else None
        source = PairwiseBatchSource(pairs, batch_size, pad_id=2, seed=0, group_by_length=False)
        window = [source.batch(0, i) for i in range(source.batches_per_epoch())]
        params = [p for p in model.parameters() if p.requires_grad]
        metrics = train_step(model, objective, window, params, max_grad_norm=0.0, ref=ref)
        losses.append(metrics["loss"])
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_reward_read_at_last_real_token_not_first_pad(tiny_model_dir, pairs):
    """pad == EOS (<|im_end|>, id 2) also appears inside the text: the mask, not the first pad, marks the end."""
    model = _tiny(tiny_model_dir, lora=False).eval()
    torch.manual_seed(0)
    attach_head(model)
    batch = pairwise_batch(pairs, pad_id=2)
    lengths = batch["attention_mask"].sum(1) - 1
    assert last_token_index(batch["attention_mask"]).tolist() == lengths.tolist()
    with torch.no_grad():
        padded = reward_scores(model, batch["input_ids"], batch["attention_mask"])
        alone = [reward_scores(model, batch["input_ids"][i : i + 1, : n + 1], batch["attention_mask"][i : i + 1, : n + 1]) for i, n in enumerate(lengths.tolist())]
    torch.testing.assert_close(padded, torch.cat(alone), atol=1e-5, rtol=1e-5)
    left = torch.zeros_like(batch["attention_mask"][:1])
    left[0, 3:] = 1
    assert last_token_index(left).item() == left.shape[1] - 1


def test_kto_batches_pair_prompts_with_other_completions(tiny_model_dir, tmp_path, tokenizer):
    import json

    path = tmp_path / "kto.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}) for r in PAIRS[:2] for k in ("chosen", "rejected")))
    resolve_template(tokenizer, "auto")
    rows = load_preference_examples(str(path), tokenizer, "unpaired", max_length=128)
    batch = unpaired_batch(rows, pad_id=2)
    assert batch["desirable"].tolist() == [True, False, True, False] and batch["num_rows"] == 4
    kl_text = tokenizer.decode(batch["kl_input_ids"][2][batch["kl_attention_mask"][2].bool()])
    assert "Capital of Italy?" in kl_text and "I do not know, sorry." in kl_text  # prompt 2 + completion 1
    model = _tiny(tiny_model_dir, lora=True)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.zeros_(p)
    out = build_objective("kto")(model, batch, ref=build_reference(model, "auto"))
    assert float(out.loss.detach()) / 4 == pytest.approx(0.5, abs=1e-6)  # π = π_ref: r = 0, z0 = 0, 1 - σ(0) = 0.5
    assert out.metrics["kl"] == 0.0
    source = UnpairedBatchSource(rows, 2, pad_id=2, seed=0)
    assert sum(source.batch(0, i)["num_rows"] for i in range(source.batches_per_epoch())) == 4
