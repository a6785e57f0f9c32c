"""End-to-end training through the real CLI and library on tiny random models built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.cli.main import main
from tunesmith.config.load import load_config
from tunesmith.training.metrics import read_metrics
from tunesmith.training.run import run_training

QUESTIONS = [
    ("What colour is the sky?", "Blue, on a clear day."),
    ("Name a prime number.", "Seven is prime."),
    ("What is 2 + 2?", "Four."),
    ("Say hello in French.", "Bonjour!"),
    ("What do bees make?", "Bees make honey and wax."),
    ("Capital of Italy?", "Rome is the capital of Italy."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is ice?", "Frozen water."),
    ("Opposite of hot?", "Cold."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest."),
    ("Spell cat backwards.", "tac"),
    ("What gas do plants absorb?", "Plants absorb carbon dioxide for photosynthesis."),
    ("Is a tomato a fruit?", "Yes, botanically a tomato is a fruit."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("What is H2O?", "Water."),
]


def write_chat_data(path: Path, repeat: int = 1) -> Path:
    with path.open("w") as handle:
        for _ in range(repeat):
            for question, answer in QUESTIONS:
                row = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
                handle.write(json.dumps(row) + "\n")
    return path


def write_config(tmp: Path, model_dir: Path, data_file: Path, **sections) -> Path:
    cfg = {
        "model": {"name_or_path": str(model_dir), "dtype": "fp32"},
        "method": {"kind": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"train": [{"path": str(data_file)}], "max_length": 128},
        "train": {"batch_size": 4, "lr": 5e-3, "max_steps": 8, "warmup_ratio": 0.0, "seed": 0,
                  "scheduler": "constant", "save_every": 0},
        "output": {"dir": str(tmp / "run"), "tensorboard": True},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_losses(out: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(out / "metrics.jsonl") if row["split"] == "train"]


def test_lora_training_via_cli_loss_falls_and_writes_outputs(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "train.jsonl")
    config = write_config(tmp_path, tiny_model_dir, data, data={"eval": [{"path": str(data)}]},
                          train={"max_steps": 30, "lr": 1e-2, "eval_every": 10})
    main(["train", str(config), "--quiet"])
    out = tmp_path / "run"
    assert len(train_losses(out)) == 30
    evals = [row["loss"] for row in read_metrics(out / "metrics.jsonl") if row["split"] == "eval"]
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2] and evals[2] < 0.8 * evals[0]
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["data"]["kept"] == 2 * len(QUESTIONS)  # train + eval file


def test_adapter_loads_with_plain_peft(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_chat_data(tmp_path / "train.jsonl")
    result = run_training(load_config(write_config(tmp_path, tiny_model_dir, data)), show_progress=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter"))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)


def test_lora_changes_adapters_and_leaves_base_bit_identical(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    data = write_chat_data(tmp_path / "train.jsonl")
    cfg = load_config(write_config(tmp_path, tiny_model_dir, data, model={"dtype": "bf16"}))
    model = run_training(cfg, show_progress=False).model
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).named_parameters())
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: training moved every one
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    checked = 0
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert not param.requires_grad
        assert torch.equal(param, base[key]), name
        checked += 1
    assert checked == len(base)


def test_full_finetuning_changes_every_trainable_tensor(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    data = write_chat_data(tmp_path / "train.jsonl")
    cfg = load_config(write_config(tmp_path, tiny_model_dir, data, method={"kind": "full"}, train={"max_steps": 3, "lr": 1e-3}))
    model = run_training(cfg, show_progress=False).model
    before = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).named_parameters())
    for name, param in model.named_parameters():
        assert param.requires_grad
        assert not torch.equal(param, before[name]), f"{name} did not change"
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_mixed_precision_on_an_fp32_base_says_it_does_nothing(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "train.jsonl")
    fp32 = write_config(tmp_path, tiny_model_dir, data, method={"kind": "full", "mixed_precision": True}, train={"max_steps": 1})
    main(["train", str(fp32), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert "method.mixed_precision has no effect: the base loaded in fp32 (model.dtype is fp32)" in err
    bf16 = write_config(tmp_path, tiny_model_dir, data, model={"dtype": "bf16"}, output={"dir": str(tmp_path / "bf16")},
                        method={"kind": "full", "mixed_precision": True}, train={"max_steps": 1})
    main(["train", str(bf16), "--quiet"])
    assert "mixed_precision has no effect" not in capsys.readouterr().err


def test_lm_head_buffers_are_freed_when_training_ends(tmp_path, tiny_model_dir, monkeypatch):
    from tests.e2e.test_align import FACTS, write_align_config, write_pairs
    from tunesmith import objectives
    from tunesmith.objectives import logprobs

    built, sizes = [], []
    real_build = objectives.build_objective

    def build(*args, **kwargs):
        objective = real_build(*args, **kwargs)
        built.append(objective)
        return objective

    monkeypatch.setattr(objectives, "build_objective", build)
    data = write_chat_data(tmp_path / "train.jsonl")
    run_training(load_config(write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 2})), show_progress=False)
    (sft,) = built
    assert sft.workspace.low is None and sft.workspace.high is None
    sft.workspace.get(3, 5, torch.float32, torch.device("cpu"))  # released, not broken: allocates again on use
    assert sft.workspace.low.shape == (3, 5)

    real_get = logprobs.WORKSPACE.get
    monkeypatch.setattr(logprobs.WORKSPACE, "get", lambda rows, *a: sizes.append(rows) or real_get(rows, *a))
    pairs = write_pairs(tmp_path / "pairs.jsonl", FACTS[:8])
    run_training(load_config(write_align_config(tmp_path, tiny_model_dir, pairs, "dpo", train={"max_steps": 2},
                                                output={"dir": str(tmp_path / "dpo"), "tensorboard": False})),
                 show_progress=False)
    assert sizes and logprobs.WORKSPACE.low is None and logprobs.WORKSPACE.high is None  # used by the LoRA head, then freed


def test_batch8_accum1_equals_batch1_accum8(tmp_path, tiny_model_dir):
    """Whole runs agree. Adam divides by sqrt(v), which blows fp32 noise on near-zero gradients up to ~lr per
    element, so the lr is small here; the gradient test below checks the normalisation itself tightly."""
    data = write_chat_data(tmp_path / "train.jsonl")
    runs = {}
    for batch, accum in [(8, 1), (1, 8)]:
        folder = tmp_path / f"b{batch}a{accum}"
        folder.mkdir()
        cfg = load_config(write_config(folder, tiny_model_dir, data, train={
            "batch_size": batch, "grad_accum": accum, "max_steps": 2, "group_by_length": False, "lr": 1e-5}))
        result = run_training(cfg, show_progress=False)
        weights = {n: p.detach().clone() for n, p in result.model.named_parameters() if p.requires_grad}
        runs[(batch, accum)] = ([h["loss"] for h in result.history if "loss" in h], weights)
    (loss_a, w_a), (loss_b, w_b) = runs[(8, 1)], runs[(1, 8)]
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for name in w_a:
        assert torch.allclose(w_a[name], w_b[name], atol=1e-5), name


def test_window_gradient_is_normalised_by_all_supervised_tokens(tiny_model_dir, tokenizer):
    """The accumulated gradient of 1 batch of 8 equals that of 8 batches of 1 (rows of different lengths)."""
    from transformers import AutoModelForCausalLM

    from tunesmith.data.collate import pad_batch
    from tunesmith.data.formats import Record
    from tunesmith.data.templates import render
    from tunesmith.objectives.sft import SFTObjective
    from tunesmith.training.loop import train_step

    examples = [render(Record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}]), tokenizer)
                for q, a in QUESTIONS[:8]]
    assert len({len(e.input_ids) for e in examples}) > 3
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = list(model.parameters())
    grads = []
    for window in ([pad_batch(examples, tokenizer.pad_token_id)], [pad_batch([e], tokenizer.pad_token_id) for e in examples]):
        model.zero_grad()
        metrics = train_step(model, SFTObjective(), window, params, max_grad_norm=0)
        grads.append(([p.grad.clone() for p in params], metrics["loss"]))
    (g8, loss8), (g1, loss1) = grads
    assert loss8 == pytest.approx(loss1, rel=1e-6)
    for a, b in zip(g8, g1):  # equal up to fp32 summation order
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_resumed_run_matches_uninterrupted(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "train.jsonl")
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full_dir.mkdir()
    part_dir.mkdir()
    settings = {"max_steps": 8, "save_every": 3, "keep_last": 5, "batch_size": 3, "lr": 1e-2}
    lora = {"kind": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}  # dropout: RNG state must resume too
    full = run_training(load_config(write_config(full_dir, tiny_model_dir, data, train=settings, method=lora)), show_progress=False)
    full_losses = [h["loss"] for h in full.history]
    # An interrupted run: only its step-3 checkpoint survives (as after a kill); resuming must replay steps 4..8 exactly.
    part_cfg = write_config(part_dir, tiny_model_dir, data, train=settings, method=lora)
    src = full_dir / "run" / "checkpoints" / "checkpoint-3"
    dst = part_dir / "run" / "checkpoints" / "checkpoint-3"
    dst.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(src, dst)
    resumed = run_training(load_config(part_cfg), show_progress=False)
    resumed_losses = [h["loss"] for h in resumed.history]
    assert resumed.history[0]["step"] == 4
    assert resumed_losses == full_losses[3:]  # bit-for-bit
    a = load_file(str(full_dir / "run" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(part_dir / "run" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_flag_starts_over_and_resume_says_so(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "train.jsonl")
    config = write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 2})
    main(["train", str(config), "--quiet"])
    main(["train", str(config), "--quiet", "train.max_steps=3"])
    assert "resuming from" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"] == [1, 2, 3]
    main(["train", str(config), "--quiet", "--fresh"])
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"] == [1, 2]


def test_eval_and_early_stopping(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "train.jsonl")
    other = tmp_path / "eval.jsonl"
    other.write_text(json.dumps({"messages": [{"role": "user", "content": "zzz"}, {"role": "assistant", "content": "qqq www"}]}) + "\n")
    cfg = load_config(write_config(tmp_path, tiny_model_dir, data, data={"eval": [{"path": str(other)}]},
                                   train={"max_steps": 40, "eval_every": 1, "early_stopping_patience": 2, "lr": 0.5}))
    result = run_training(cfg, show_progress=False)
    evals = [h for h in result.history if "eval_loss" in h]
    assert evals and all("eval_perplexity" in h for h in evals)
    assert result.summary["steps"] < 40  # a huge lr makes held-out loss worsen: stopped early


def test_non_finite_loss_skips_steps_then_stops_clearly(tmp_path, tokenizer, capsys):
    from transformers import AutoModelForCausalLM

    from tests.conftest import build_tiny_model

    poisoned = build_tiny_model(tmp_path / "nan-model", tokenizer, init_std=0.2)
    model = AutoModelForCausalLM.from_pretrained(poisoned)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(poisoned)
    data = write_chat_data(tmp_path / "d.jsonl")
    config = write_config(tmp_path, poisoned, data, train={"max_steps": 10, "max_bad_steps": 3})
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(config), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2
    assert "step 1: non-finite loss or gradient — step skipped (1 in a row)" in err
    assert "3 consecutive steps had non-finite loss" in err


def test_validate_prints_summary_without_training(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "d.jsonl")
    config = write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 0, "epochs": 2, "batch_size": 4})
    main(["validate", str(config)])
    out = " ".join(capsys.readouterr().out.split())
    assert "16 rows" in out and "8 optimizer steps (4 per epoch)" in out and "estimated epoch time" in out
    assert "trainable 8.19K" in out
    assert not (tmp_path / "run").exists()
