"""Review fixes for online RL: heads saved next to (never inside) the model folder, reward-model failures
counted, the adaptive KL controller, and the objective metrics in the progress bar."""

from __future__ import annotations

import shutil

import pytest
import torch
from rich.console import Console
from safetensors import safe_open

from tunesmith.config.schema import ModelConfig
from tunesmith.models.heads import HEADS, VALUE_ATTR, attach_head, get_head, save_with_heads
from tunesmith.models.load import load_model
from tunesmith.objectives.advantages import KLController
from tunesmith.training.metrics import progress_fields, training_progress
from tunesmith.training.rewards import FunctionReward, ModelReward, RewardSource, RewardStats


def _keys(path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def test_full_model_saves_as_plain_causal_lm_with_heads_beside_it(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="fp32"))
    value = attach_head(model, seed=1, attr=VALUE_ATTR)
    reward = attach_head(model, seed=2)
    out = save_with_heads(model, tmp_path / "model")
    weights = [k for f in out.glob("model*.safetensors") for k in _keys(f)]
    assert weights and not [k for k in weights if "head." in k and "lm_head" not in k]  # no value/reward head inside
    assert sorted(p.name for p in out.glob("*_head.safetensors")) == sorted(HEADS.values())
    with safe_open(str(out / "value_head.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("proj.weight"), value.proj.weight.detach())
    assert get_head(model, VALUE_ATTR) is value and get_head(model) is reward  # re-attached after the save
    loaded, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_lora_adapter_folder_holds_only_lora_weights(tmp_path, tiny_model_dir):
    from tunesmith.config.schema import MethodConfig
    from tunesmith.models.adapters import apply_method

    model = apply_method(load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="fp32")), MethodConfig())
    attach_head(model, attr=VALUE_ATTR)
    out = save_with_heads(model, tmp_path / "adapter")
    keys = _keys(out / "adapter_model.safetensors")
    assert keys and all("lora_" in k for k in keys)
    assert (out / "value_head.safetensors").is_file() and not (out / "reward_head.safetensors").exists()


@pytest.fixture()
def rm_folder(tmp_path, tiny_model_dir, tokenizer):
    from tunesmith.data.templates import resolve_template
    from tunesmith.models.heads import save_head

    folder = tmp_path / "rm"
    shutil.copytree(tiny_model_dir, folder)
    model = load_model(ModelConfig(name_or_path=str(folder), dtype="fp32"))
    attach_head(model, seed=3)
    save_head(model, folder)
    resolve_template(tokenizer, "auto")
    return folder


PROMPTS = [[{"role": "user", "content": "Colour of grass?"}], [{"role": "user", "content": "2 + 2?"}],
           [{"role": "user", "content": "Capital of Peru?"}]]


def test_reward_model_non_finite_scores_and_errors_are_counted_with_fallback(rm_folder, tokenizer):
    rm = ModelReward(str(rm_folder), str(rm_folder), tokenizer, batch_size=2, fallback=-2.0)
    good = rm.score(["Green.", "Four.", "Lima."], PROMPTS)
    stats = RewardStats()
    scores, failed = rm.checked_score(["Green.", "Four.", "Lima."], PROMPTS, stats)
    assert scores.tolist() == pytest.approx(good.tolist(), abs=1e-6) and not failed.any() and stats.failures == {}
    # a conversation the template cannot render fails its batch of 2; the third row is still scored
    bad_prompts = [[{"role": "user", "content": None}], PROMPTS[1], PROMPTS[2]]
    scores, failed = rm.checked_score(["Green.", "Four.", "Lima."], bad_prompts, stats)
    assert failed.tolist() == [True, True, False] and scores[:2].tolist() == [-2.0, -2.0]
    assert scores[2].item() == pytest.approx(good[2].item(), abs=1e-6)
    assert stats.failures == {"reward_model": 2}
    with torch.no_grad():
        rm.model.reward_head.proj.bias.fill_(float("nan"))  # every score non-finite now
    source = RewardSource([FunctionReward("one", lambda c, r: 1.0)], rm)
    total, failed = source.score(["a", "b", "c"], [{}, {}, {}], PROMPTS)
    assert total.tolist() == [-1.0, -1.0, -1.0] and failed.all()
    assert source.stats.failures == {"reward_model": 3} and "not a finite number" in source.stats.summary()


def test_adaptive_kl_controller_pinned():
    fixed = KLController(0.05)
    assert fixed.update(100.0, 64) == 0.05  # no target: β stays put
    ctl = KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(12.0, 10) == pytest.approx(0.1 * 1.02)  # error clipped to +0.2
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * 1.02 * 0.98)  # error -0.5 clipped to -0.2
    assert ctl.update(6.6, 10) == pytest.approx(0.1 * 1.02 * 0.98 * 1.01)  # error +0.1
    assert ctl.update(6.0, 10) == pytest.approx(0.1 * 1.02 * 0.98 * 1.01)  # on target: unchanged


@pytest.mark.parametrize("metrics,shown", [
    ({"loss": 0.69, "rewards/accuracies": 0.75, "rewards/margins": 0.1234, "rewards/chosen": 1.0}, "acc 0.75  margin 0.123"),
    ({"loss": 0.5, "accuracy": 1.0, "margin": 2.5, "reward_mean": 0.1}, "acc 1.00  margin 2.500"),
    ({"loss": 0.1, "score": 0.4567, "kl": 0.25, "kl_coef": 0.05, "clipfrac": 0.125, "reward_failed_rate": 0.0},
     "score 0.457  kl 0.250  beta 0.050  clip 0.12  rfail 0.00"),
    ({"loss": 0.1, "score": 0.8, "group_reward_std": 0.3, "kl": 0.01, "clipfrac": 0.0, "reward_failed_rate": 0.5},
     "score 0.800  std 0.300  kl 0.010  clip 0.00  rfail 0.50"),
    ({"loss": 1.2, "grad_norm": 0.3, "tokens": 100.0}, ""),
])
def test_progress_bar_shows_the_objectives_key_metrics(metrics, shown):
    assert progress_fields(metrics) == shown
    console = Console(record=True, width=250, force_terminal=False)
    with training_progress(True) as progress:
        progress.console.quiet = True
        task = progress.add_task("train", total=4, loss="-", lr="-", tps="-", extra="")
        progress.update(task, advance=1, loss="0.1000", lr="1.00e-05", tps="12", extra=progress_fields(metrics))
        console.print(progress.get_renderable())
    text = console.export_text()
    assert "loss 0.1000" in text and shown in text

