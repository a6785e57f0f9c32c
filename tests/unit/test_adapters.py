"""Training methods on a tiny real Llama: which parameters train, in which dtype, and adapter save/load."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from torch import nn

from tests.conftest import build_tiny_model
from tunesmith.config.schema import FreezeConfig, LoraConfig, MethodConfig
from tunesmith.errors import TunesmithError
from tunesmith.models.adapters import (
    apply_method,
    format_trainable_report,
    load_adapter,
    save_adapter,
    trainable_report,
)

IDS = torch.tensor([[1, 105, 2230, 314, 2, 7, 9, 2]])


def load(folder, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def lora(**kw) -> MethodConfig:
    return MethodConfig(kind="lora", lora=LoraConfig(**kw))


def freeze(**kw) -> MethodConfig:
    return MethodConfig(kind="freeze", freeze=FreezeConfig(**kw))


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def randomise_lora_b(model) -> None:
    """LoRA B starts at zero (adapter = identity); give it values so save/load is actually exercised."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def test_lora_all_linear_count_matches_analytic(tiny_model_dir):
    model = load(tiny_model_dir)
    linears = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name != "lm_head"]
    expected = sum(8 * (m.in_features + m.out_features) for m in linears)
    model = apply_method(model, lora(r=8))
    report = trainable_report(model)
    assert report["trainable"] == expected == 16384  # 2 layers x 8 x (128+96+96+128+192+192+192)
    assert report["method"] == "lora r=8 on 14 modules"
    assert all(("lora_A" in n or "lora_B" in n) for n in trainable_names(model))


def test_lora_params_fp32_on_bf16_base_and_trains(tiny_model_dir):
    model = apply_method(load(tiny_model_dir, torch.bfloat16), lora(r=4, targets=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert "lora_" in name and p.dtype == torch.float32, name
        else:
            assert p.dtype == torch.bfloat16, name
    assert len(trainable_names(model)) == 2 * 2 * 2  # layers x (q, v) x (A, B)
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    report = trainable_report(model)
    assert report["trainable_dtypes"] == {"float32": report["trainable"]}
    assert set(report["dtypes"]) == {"bfloat16", "float32"}


def test_lora_unknown_target_is_a_clear_error(tiny_model_dir):
    with pytest.raises(TunesmithError, match=r"\['qproj'\] match no module.*q_proj"):
        apply_method(load(tiny_model_dir), lora(targets=["q_proj", "qproj"]))


def test_dora_and_rslora_apply(tiny_model_dir):
    model = apply_method(load(tiny_model_dir), lora(r=16, dora=True, rslora=True, alpha=8))
    cfg = model.peft_config["default"]
    assert cfg.use_dora and cfg.use_rslora
    magnitudes = [n for n in trainable_names(model) if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 14
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / 16**0.5)  # rslora: alpha / sqrt(r)
    assert trainable_report(model)["trainable"] == 32768 + 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    assert "dora r=16 rslora on 14 modules" in format_trainable_report(trainable_report(model))


def test_freeze_top_k_layers_trains_last_block_only(tiny_model_dir):
    model = apply_method(load(tiny_model_dir, torch.bfloat16), freeze(top_k_layers=1))
    last_block = {n for n, _ in model.named_parameters() if n.startswith("model.layers.1.")}
    assert trainable_names(model) == last_block and len(last_block) == 9
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in last_block)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    model(input_ids=IDS, labels=IDS).loss.backward()  # mixed dtypes still run without autocast
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_freeze_modules_and_tied_head(tiny_model_dir):
    model = apply_method(load(tiny_model_dir), freeze(trainable_modules=["mlp.down_proj"], train_lm_head=True))
    assert trainable_names(model) == {
        "model.embed_tokens.weight",  # tied to lm_head: one tensor
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    }


def test_freeze_errors(tiny_model_dir):
    with pytest.raises(TunesmithError, match="nothing would be trained"):
        apply_method(load(tiny_model_dir), freeze())
    with pytest.raises(TunesmithError, match="'mlpp' matches no parameter name"):
        apply_method(load(tiny_model_dir), freeze(trainable_modules=["mlpp"]))
    with pytest.raises(TunesmithError, match="top_k_layers=3 but the model has 2 blocks"):
        apply_method(load(tiny_model_dir), freeze(top_k_layers=3))


def test_full_trains_everything_in_fp32(tiny_model_dir, tmp_path):
    model = apply_method(load(tiny_model_dir, torch.bfloat16), MethodConfig(kind="full"))
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    report = trainable_report(model)
    assert report["trainable"] == report["total"] and report["percent"] == 100.0
    assert format_trainable_report(report).endswith("(100.00%) — full")
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)
        before = model(input_ids=IDS).logits
    save_adapter(model, tmp_path / "full")
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "full")(input_ids=IDS).logits, before)


def test_adapter_round_trip_identical_outputs(tiny_model_dir, tmp_path):
    model = apply_method(load(tiny_model_dir), lora(r=4))
    randomise_lora_b(model)
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=IDS).logits
        base = load(tiny_model_dir)(input_ids=IDS).logits
    assert not torch.allclose(trained, base)  # the adapter changes outputs, so the comparison below means something
    out = save_adapter(model, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()

    reloaded = load_adapter(load(tiny_model_dir), str(out), trainable=False)
    assert trainable_names(reloaded) == set()
    plain = PeftModel.from_pretrained(load(tiny_model_dir), str(out))  # plain peft reads it too
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=IDS).logits, trained)
        assert torch.equal(plain(input_ids=IDS).logits, trained)


def test_load_adapter_trainable_on_bf16_base(tiny_model_dir, tmp_path):
    save_adapter(apply_method(load(tiny_model_dir), lora(r=4)), tmp_path / "a")
    model = load_adapter(load(tiny_model_dir, torch.bfloat16), str(tmp_path / "a"), trainable=True)
    names = trainable_names(model)
    assert len(names) == 28 and all("lora_" in n for n in names)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_adapter_for_other_base_gives_clear_error(tiny_model_dir, tmp_path, tokenizer):
    other = build_tiny_model(tmp_path / "other", tokenizer, hidden=32)
    save_adapter(apply_method(load(other), lora(r=4)), tmp_path / "small-adapter")
    with pytest.raises(TunesmithError) as info:
        load_adapter(load(tiny_model_dir), str(tmp_path / "small-adapter"), trainable=False)
    msg = str(info.value)
    assert f"was trained for base '{other}' (hidden 32)" in msg
    assert f"but the model is '{tiny_model_dir}' (hidden 64)" in msg
    assert "'model.layers.0.self_attn.q_proj' is 64->64 in the model but 32->32 in the adapter (and 13 more" in msg


def test_adapter_folder_errors(tiny_model_dir, tmp_path):
    with pytest.raises(TunesmithError, match="adapter folder .* not found"):
        load_adapter(load(tiny_model_dir), str(tmp_path / "missing"), trainable=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunesmithError, match="adapter_config.json is missing"):
        load_adapter(load(tiny_model_dir), str(tmp_path / "empty"), trainable=False)
    (tmp_path / "empty" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(TunesmithError, match="has no adapter_model.safetensors"):
        load_adapter(load(tiny_model_dir), str(tmp_path / "empty"), trainable=False)


def test_format_trainable_report_units():
    report = {"trainable": 1_843_200, "total": 136_400_000, "percent": 1.3513, "method": "lora r=16 on 210 modules"}
    assert format_trainable_report(report) == "trainable 1.84M / 136.4M (1.35%) — lora r=16 on 210 modules"
