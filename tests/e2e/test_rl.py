"""Online RL through the real CLI on tiny random models: GRPO improves a planted reward, PPO runs, logs its
metrics, counts failing reward functions, evaluates held-out prompts, and resumes mid-rollout exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import build_tiny_model
from tunesmith.cli.main import main
from tunesmith.training.metrics import read_metrics

PROMPTS = ["What colour is the sky?", "Name a prime number.", "What is 2 + 2?", "Say hello in French.",
           "What do bees make?", "Capital of Italy?", "How many legs does a spider have?", "What is ice?"]
NEW_TOKENS = 8
REWARDS = f'''
def spaces(completion, row):
    """Planted reward: words per token (tokens that start with a space), in [0, ~1]."""
    return completion.count(" ") / {NEW_TOKENS}


def broken(completion, row):
    if len(completion) % 2:
        raise RuntimeError("odd length")
    return "high"  # not a number either
'''


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory, tokenizer) -> Path:
    """A tiny random model in which every space-prefixed token shares one embedding direction, so raising
    their probability together is learnable by a LoRA (a random model has no such structure to find)."""
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path_factory.mktemp("planted"), tokenizer, init_std=0.2)
    model = AutoModelForCausalLM.from_pretrained(folder)
    words = torch.tensor([i for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))) if tok.startswith("Ġ")])
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.get_input_embeddings().weight[words] += direction / direction.norm()
    model.save_pretrained(folder)
    return folder


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def write_rl_config(tmp: Path, model_dir: Path, objective: str, out: str = "run", **sections) -> Path:
    (tmp / "planted_rewards.py").write_text(REWARDS)
    cfg = {
        "model": {"name_or_path": str(model_dir), "dtype": "fp32"},
        "method": {"kind": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [{"path": str(write_prompts(tmp / "prompts.jsonl", PROMPTS))}], "max_length": 96},
        "train": {"objective": objective, "batch_size": 16, "lr": 2e-2, "max_steps": 5, "warmup_ratio": 0.0,
                  "seed": 0, "scheduler": "constant"},
        "rl": {"rollout_prompts": 4, "group_size": 4, "max_new_tokens": NEW_TOKENS, "temperature": 1.0, "ppo_epochs": 1,
               "kl_coef": 0.0, "missing_eos_penalty": 0.0, "reward_functions": [f"{tmp / 'planted_rewards.py'}:spaces"]},
        "output": {"dir": str(tmp / out), "tensorboard": False},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp / f"{objective}-{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_rows(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]


def test_grpo_raises_the_planted_reward(tmp_path, planted_model):
    config = write_rl_config(tmp_path, planted_model, "grpo", rl={"kl_coef": 0.02})
    main(["train", str(config), "--quiet"])
    rows = train_rows(tmp_path / "run")
    assert len(rows) == 5
    scores = [r["score"] for r in rows]
    assert scores[0] < 0.75 and sum(scores[-2:]) / 2 > scores[0] + 0.2, scores
    first = rows[0]
    assert first["clipfrac"] == 0.0 and first["approx_kl"] == pytest.approx(0.0, abs=1e-10)  # ratio == 1 on-policy
    assert first["kl_k3"] == pytest.approx(0.0, abs=1e-8) and first["kl"] == pytest.approx(0.0, abs=1e-5)
    assert all(torch.isfinite(torch.tensor(r["kl"])) for r in rows) and rows[-1]["kl"] > 0  # moved off the reference
    assert first["group_reward_std"] > 0 and first["response_length"] == NEW_TOKENS
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["objective"] == "grpo" and summary["reference"] == "adapter_disabled"
    assert summary["rewards"] == {"calls": 5 * 16, "failures": {}, "examples": []}


PPO = {"train": {"batch_size": 2, "max_steps": 6, "lr": 5e-3},
       "rl": {"group_size": 1, "ppo_epochs": 2, "kl_coef": 0.05, "missing_eos_penalty": 1.0}}


def test_ppo_logs_metrics_counts_bad_rewards_and_resumes_mid_rollout_exactly(tmp_path, planted_model):
    bad = {**PPO["rl"], "reward_functions": [f"{tmp_path / 'planted_rewards.py'}:spaces", f"{tmp_path / 'planted_rewards.py'}:broken"]}
    held = write_prompts(tmp_path / "held.jsonl", ["What is snow?", "Capital of Spain?"])
    full = write_rl_config(tmp_path, planted_model, "ppo", "full", train={**PPO["train"], "save_every": 3},
                           rl=bad, data={"eval": [{"path": str(held)}]})
    main(["train", str(full), "--quiet"])
    rows = train_rows(tmp_path / "full")
    assert len(rows) == 6  # 4 prompts x 1 sample / 2 per micro-batch x 2 PPO epochs = 4 steps per rollout
    for key in ("score", "kl", "entropy", "clipfrac", "value_loss", "approx_kl", "response_length", "policy_loss", "eos_rate"):
        assert all(key in r and r[key] == r[key] for r in rows), key
    assert rows[0]["clipfrac"] == 0.0 and rows[0]["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    assert all(abs(r["kl"]) < 50 for r in rows) and rows[0]["eos_rate"] == 0.0
    assert rows[0]["reward_failed_rate"] == 1.0  # `broken` fails on every sample; the run goes on
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["rewards"]["calls"] == 8 + 2 and summary["rewards"]["failures"] == {f"{tmp_path / 'planted_rewards.py'}:broken": 10}
    evals = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if r["split"] == "eval"]
    assert len(evals) == 1 and evals[0]["loss"] == pytest.approx(-evals[0]["reward_mean"])
    assert (tmp_path / "full" / "checkpoints" / "checkpoint-3" / "rollout.pt").is_file()

    # the same run stopped after step 3 (mid-rollout) and resumed must continue exactly
    part = write_rl_config(tmp_path, planted_model, "ppo", "part", train={**PPO["train"], "save_every": 3, "max_steps": 3},
                           rl=bad, data={"eval": [{"path": str(held)}]})
    main(["train", str(part), "--quiet"])
    resumed = write_rl_config(tmp_path, planted_model, "ppo", "part", train={**PPO["train"], "save_every": 3},
                              rl=bad, data={"eval": [{"path": str(held)}]})
    main(["train", str(resumed), "--quiet"])
    again = train_rows(tmp_path / "part")
    assert [r["step"] for r in again] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(rows[3:], again[3:]):
        for key in ("loss", "score", "value_loss", "approx_kl"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)


def test_rl_config_validates_and_errors_are_clean(tmp_path, tiny_model_dir, capsys):
    main(["validate", str(write_rl_config(tmp_path, tiny_model_dir, "ppo")), "--no-time-step"])
    assert "8 rows" in capsys.readouterr().out  # prompts counted; steps derived from rollouts x PPO epochs
    config = write_rl_config(tmp_path, tiny_model_dir, "grpo", rl={"group_size": 1})
    with pytest.raises(SystemExit) as exc:
        main(["train", str(config), "--quiet"])
    assert exc.value.code == 2 and "group_size >= 2" in capsys.readouterr().err
    config = write_rl_config(tmp_path, tiny_model_dir, "ppo", rl={"reward_functions": ["no_such_verifier"]})
    with pytest.raises(SystemExit) as exc:
        main(["train", str(config), "--quiet"])
    assert exc.value.code == 2 and "unknown reward 'no_such_verifier'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_shipped_rl_configs_load(name):
    from tunesmith.config.load import load_config

    cfg = load_config(str(Path(__file__).parents[2] / "configs" / f"{name}.yaml"), [])
    assert cfg.train.objective == name and (cfg.rl.reward_model or cfg.rl.reward_functions)
