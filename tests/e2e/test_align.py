"""End-to-end preference alignment through the real CLI on tiny random models (DPO, RM, SimPO, ORPO, KTO)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tunesmith.cli.main import main
from tunesmith.objectives import logprobs
from tunesmith.training.metrics import read_metrics

FACTS = [
    ("What colour is the sky?", "Blue."), ("Name a prime number.", "Seven."), ("What is 2 + 2?", "Four."),
    ("Say hello in French.", "Bonjour!"), ("What do bees make?", "Honey."), ("Capital of Italy?", "Rome."),
    ("How many legs does a spider have?", "Eight."), ("What is ice?", "Frozen water."), ("Opposite of hot?", "Cold."),
    ("Largest ocean?", "The Pacific."), ("Spell cat backwards.", "tac"), ("Who wrote Hamlet?", "Shakespeare."),
    ("What is H2O?", "Water."), ("Freezing point of water?", "Zero Celsius."), ("Fastest land animal?", "The cheetah."),
    ("Planet nearest the sun?", "Mercury."), ("What do cows drink?", "Water."), ("Colour of grass?", "Green."),
    ("How many days in a week?", "Seven."), ("Opposite of up?", "Down."),
]
REFUSAL = "I do not know, sorry."


def write_pairs(path: Path, facts) -> Path:
    """Planted preference: the real answer is always preferred to a fixed refusal."""
    with path.open("w") as handle:
        for question, answer in facts:
            handle.write(json.dumps({"prompt": question, "chosen": answer, "rejected": REFUSAL}) + "\n")
    return path


def write_unpaired(path: Path, facts) -> Path:
    with path.open("w") as handle:
        for question, answer in facts:
            handle.write(json.dumps({"prompt": question, "completion": answer, "label": True}) + "\n")
            handle.write(json.dumps({"prompt": question, "completion": REFUSAL, "label": False}) + "\n")
    return path


def write_align_config(tmp: Path, model_dir: Path, data_file: Path, objective: str, eval_file: Path | None = None, **sections) -> Path:
    cfg = {
        "model": {"name_or_path": str(model_dir), "dtype": "fp32"},
        "method": {"kind": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"train": [{"path": str(data_file)}], "max_length": 128},
        "train": {"objective": objective, "batch_size": 4, "lr": 5e-3, "max_steps": 12, "warmup_ratio": 0.0,
                  "seed": 0, "scheduler": "constant"},
        "align": {},
        "output": {"dir": str(tmp / "run"), "tensorboard": False},
    }
    if eval_file is not None:
        cfg["data"]["eval"] = [{"path": str(eval_file)}]
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp / f"{objective}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows(out: Path, split: str) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == split]


def test_lora_dpo_via_cli_loss_falls_from_ln2_with_disabled_adapter_reference(tmp_path, tiny_model_dir, monkeypatch):
    def no_copies(*args, **kwargs):  # the LoRA reference must NOT be a second copy of the model
        raise AssertionError("the LoRA DPO run built a frozen copy of the model")

    monkeypatch.setattr(logprobs.FrozenCopyReference, "__init__", no_copies)
    data = write_pairs(tmp_path / "pairs.jsonl", FACTS)
    config = write_align_config(tmp_path, tiny_model_dir, data, "dpo", train={"max_steps": 10, "lr": 1e-2})
    main(["train", str(config), "--quiet"])
    out = tmp_path / "run"
    train = rows(out, "train")
    assert len(train) == 10
    first, last = train[0], train[-1]
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)  # π = π_ref at step 0: loss = ln 2
    assert first["rewards/accuracies"] == 0.0 and first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert last["loss"] < 0.4 and last["rewards/accuracies"] == 1.0 and last["rewards/margins"] > 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "adapter_disabled" and summary["objective"] == "dpo"


def test_reward_model_via_cli_heldout_accuracy_rises(tmp_path, tiny_model_dir):
    train = write_pairs(tmp_path / "train.jsonl", FACTS[:14])
    held = write_pairs(tmp_path / "held.jsonl", FACTS[14:])
    config = write_align_config(tmp_path, tiny_model_dir, train, "rm", eval_file=held,
                                train={"max_steps": 10, "lr": 1e-2, "eval_every": 5})
    main(["train", str(config), "--quiet"])
    out = tmp_path / "run"
    train_rows, evals = rows(out, "train"), rows(out, "eval")
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    assert len(evals) == 2 and evals[-1]["accuracy"] == 1.0 and evals[-1]["margin"] > 1.0
    assert (out / "adapter" / "reward_head.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] is None and summary["final_eval"]["accuracy"] == 1.0


@pytest.mark.parametrize("name", ["rm", "dpo", "simpo", "orpo", "kto"])
def test_shipped_configs_load(name):
    from tunesmith.config.load import load_config

    cfg = load_config(str(Path(__file__).parents[2] / "configs" / f"{name}.yaml"), [])
    assert cfg.train.objective == name


@pytest.mark.parametrize("name", ["simpo", "orpo", "kto"])
def test_other_objectives_train_and_validate_via_cli(tmp_path, tiny_model_dir, name, capsys):
    facts = FACTS[:8]
    data = write_unpaired(tmp_path / "kto.jsonl", facts) if name == "kto" else write_pairs(tmp_path / "pairs.jsonl", facts)
    config = write_align_config(tmp_path, tiny_model_dir, data, name, train={"max_steps": 6, "lr": 1e-2},
                                align={"beta": 2.0} if name == "simpo" else {})
    main(["validate", str(config), "--no-time-step"])
    shown = capsys.readouterr().out
    assert re.search(rf"objective\s*│\s*{name}\b", shown), shown
    main(["train", str(config), "--quiet"])
    train = rows(tmp_path / "run", "train")
    assert len(train) == 6 and train[-1]["loss"] < train[0]["loss"]
    if name == "kto":
        assert train[0]["loss"] == pytest.approx(0.5, abs=1e-5) and train[0]["kl"] == 0.0
    else:
        assert train[-1]["rewards/accuracies"] == 1.0
