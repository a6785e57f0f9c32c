"""PPO through the real CLI, full fine-tuning: the KL bound and adaptive KL coefficient are reported, the
starting point is evaluated (rl.eval_at_start), the saved policy loads as a plain causal LM (value head saved
beside it), and a resumed run restores β."""

from __future__ import annotations

import json

import pytest
import torch

from tests.e2e.test_rl import planted_model, train_rows, write_prompts, write_rl_config  # noqa: F401  (fixture)
from tunesmith.cli.main import main
from tunesmith.training.metrics import read_metrics

RUN = {"train": {"batch_size": 4, "max_steps": 4, "lr": 1e-3, "save_every": 2},
       "method": {"kind": "full"},
       "rl": {"group_size": 1, "ppo_epochs": 1, "kl_coef": 0.1, "kl_target": 0.5, "kl_horizon": 8, "max_kl": 1e-3}}


def test_ppo_full_run_reports_kl_bound_and_saves_a_plain_causal_lm(tmp_path, planted_model):  # noqa: F811
    from transformers import AutoModelForCausalLM

    held = write_prompts(tmp_path / "held.jsonl", ["What is snow?", "Capital of Spain?"])
    config = write_rl_config(tmp_path, planted_model, "ppo", data={"eval": [{"path": str(held)}]},
                             **{**RUN, "rl": {**RUN["rl"], "eval_at_start": True}})
    main(["train", str(config), "--quiet"])
    rows = train_rows(tmp_path / "run")
    assert len(rows) == 4  # 4 prompts per rollout / 4 per micro-batch x 1 PPO epoch: one step per rollout
    betas = [r["kl_coef"] for r in rows]
    assert betas[0] == pytest.approx(0.1)
    for before, after, row in zip(betas, betas[1:], rows):  # Ziegler et al.: ±20% x 4 samples / horizon 8 at most
        error = min(max(row["kl"] / 0.5 - 1, -0.2), 0.2)
        assert after == pytest.approx(before * (1 + error * 4 / 8), rel=1e-5)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5) and rows[0]["kl_over_bound"] == 0.0  # step 1 is on-policy
    over = [r for r in rows if r["kl"] > 1e-3]
    assert over and all(r["kl_over_bound"] == 1.0 for r in over)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 4]  # rl.eval_at_start: the starting point, then the end
    assert summary["initial_eval"]["reward_mean"] == pytest.approx(evals[0]["reward_mean"])
    assert summary["final_eval"]["reward_mean"] == pytest.approx(evals[1]["reward_mean"])
    kl = summary["kl"]
    assert kl["rollouts"] == 4 and kl["over_bound"] == len(over) and kl["within_bound"] is False and kl["max_kl"] == 1e-3
    assert kl["max_rollout_kl"] == pytest.approx(max(r["kl"] for r in rows), rel=1e-5)
    assert kl["final_kl_coef"] == pytest.approx(betas[-1] * (1 + min(max(rows[-1]["kl"] / 0.5 - 1, -0.2), 0.2) / 2), rel=1e-5)

    folder = tmp_path / "run" / "model"
    loaded, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert (folder / "value_head.safetensors").is_file() and not (folder / "reward_head.safetensors").exists()
    assert all(torch.isfinite(p).all() for p in loaded.parameters())

    # stopped at step 2 and resumed: β and the KL bookkeeping continue as in the uninterrupted run
    part = write_rl_config(tmp_path, planted_model, "ppo", "part", **{**RUN, "train": {**RUN["train"], "max_steps": 2}})
    main(["train", str(part), "--quiet"])
    main(["train", str(write_rl_config(tmp_path, planted_model, "ppo", "part", **RUN)), "--quiet"])
    again = json.loads((tmp_path / "part" / "summary.json").read_text())["kl"]
    assert again["rollouts"] == 4 and again["final_kl_coef"] == pytest.approx(kl["final_kl_coef"], rel=1e-4)


def test_kl_bound_needs_a_reference(tmp_path, planted_model, capsys):  # noqa: F811
    config = write_rl_config(tmp_path, planted_model, "grpo", rl={"kl_coef": 0.0, "max_kl": 1.0})
    with pytest.raises(SystemExit) as exc:
        main(["train", str(config), "--quiet"])
    assert exc.value.code == 2 and "rl.max_kl measure the KL" in capsys.readouterr().err
