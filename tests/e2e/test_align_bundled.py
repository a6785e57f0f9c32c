"""Slow checks of the alignment demo configs on the real bundled SmolLM2-135M-Instruct (`make test-slow`).

The demos themselves take minutes each (README "Alignment"); these run their configs for a few steps on small
slices of the same generated data and check the behaviour that must hold from the first step on."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.config.load import load_config
from tunesmith.tasks.json_extract import write_quickstart
from tunesmith.tasks.json_prefs import write_quickstart_prefs
from tunesmith.training.run import run_training

pytestmark = pytest.mark.slow


def _steps(result, key: str) -> list[float]:
    return [h[key] for h in result.history if key in h]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> dict:
    return write_quickstart_prefs(tmp_path_factory.mktemp("prefs"), n_train=48, n_eval=27, seed=0)


def test_reward_model_demo_config_learns_to_rank_the_bundled_pairs(tmp_path, bundled_path, prefs):
    cfg = load_config("configs/rm_demo.yaml", [
        f"data.train=[{{path: {prefs['train']}}}]", f"data.eval=[{{path: {prefs['eval']}}}]",
        "train.eval_every=3", f"output.dir={tmp_path / 'rm'}", "output.tensorboard=false"])
    result = run_training(cfg, show_progress=False)
    losses, accuracies = _steps(result, "eval_loss"), _steps(result, "eval_accuracy")
    assert len(losses) == 2 and losses[1] < losses[0] < math.log(2) + 0.5   # 6 steps of 8 pairs
    assert accuracies[-1] > 0.5   # 27 held-out pairs, 9 failure kinds (measured 0.59 after 6 steps; the demo reaches 94% in 57)
    assert (tmp_path / "rm" / "adapter" / "reward_head.safetensors").is_file()


def test_dpo_demo_config_starts_at_ln2_and_separates_held_out_pairs(tmp_path, bundled_path, prefs):
    cfg = load_config("configs/dpo_demo.yaml", [
        "model.adapter=null", f"data.train=[{{path: {prefs['train']}}}]", f"data.eval=[{{path: {prefs['eval']}}}]",
        "align.sft_alpha=0.0", "train.lr=5e-4", "train.eval_every=3", f"align.ref_logps_cache={tmp_path / 'cache'}",
        f"output.dir={tmp_path / 'dpo'}", "output.tensorboard=false"])
    result = run_training(cfg, show_progress=False)
    first = result.history[1] if result.history[0]["step"] == 0 else result.history[0]
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-3)   # policy == reference at step 1
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    margins, accuracies = _steps(result, "eval_rewards/margins"), _steps(result, "eval_rewards/accuracies")
    assert margins[-1] > margins[0] > -0.05 and accuracies[-1] >= 0.7
    assert len(list((tmp_path / "cache").glob("ref_logps-*.pt"))) == 1   # reference computed once, on disk


def test_grpo_demo_config_rewards_the_verifier_and_keeps_base_weights(tmp_path, bundled_path):
    from safetensors.torch import load_file

    data = write_quickstart(tmp_path / "data", n_train=32, n_eval=8, seed=0)
    cfg = load_config("configs/grpo.yaml", [
        "model.adapter=null", f"data.train=[{{path: {data['train']}}}]", "train.max_steps=1", "rl.rollout_prompts=2",
        "rl.group_size=4", "train.batch_size=8", "train.grad_accum=1", "rl.max_new_tokens=48",
        f"output.dir={tmp_path / 'grpo'}", "output.tensorboard=false"])
    result = run_training(cfg, show_progress=False)
    step = next(h for h in result.history if h.get("step") == 1 and "score" in h)
    # json_fields: share of the five fields right, minus rl.missing_eos_penalty (0.5) for answers without EOS
    assert -0.5 <= step["score"] <= 1.0 and 0.0 <= step["eos_rate"] <= 1.0 and "group_reward_std" in step
    base = {k: v for f in bundled_path.glob("*.safetensors") for k, v in load_file(f).items()}
    checked = 0
    for name, param in result.model.named_parameters():
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" in name:
            assert param.requires_grad
        elif plain in base:
            assert not param.requires_grad and torch.equal(param.detach(), base[plain].to(param.dtype)), name
            checked += 1
    assert checked > 100   # every frozen base matrix is still the bundled weight
