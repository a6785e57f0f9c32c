"""`tunesmith estimate`: parameter counts against real models, memory terms by method, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.cli.main import main
from tunesmith.errors import TunesmithError
from tunesmith.estimate import GIB, Shape, estimate, flops_per_token, memory_terms

SMOLLM2 = {"vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True}


def test_param_counts_match_a_real_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = Shape.from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    assert shape.params() == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_params(8) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_smollm2_counts_and_method_ordering():
    shape = Shape.from_config(SMOLLM2)
    assert shape.params() == 134_515_008  # SmolLM2-135M, tied embeddings
    assert shape.lora_params(16) == 4_884_480  # what peft reports for r=16 all-linear
    full, _ = memory_terms(shape, "full", 8, 512, 16, 0, 1024, 0)
    lora, trainable = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0)
    qlora, _ = memory_terms(shape, "qlora", 8, 512, 16, 0, 1024, 0)
    assert full["weights"] == 4 * shape.params() and full["optimizer"] == 8 * shape.params()
    assert lora["optimizer"] == 8 * trainable and lora["gradients"] == 4 * trainable
    assert qlora["weights"] < lora["weights"] < full["weights"]
    ckpt, _ = memory_terms(shape, "lora", 8, 512, 16, 1, 1024, 0)
    half, _ = memory_terms(shape, "lora", 8, 512, 16, 2, 1024, 0)
    assert ckpt["activations"] < lora["activations"] / 5
    assert ckpt["activations"] < half["activations"] < 0.6 * lora["activations"]
    plain, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 0, 0)
    assert plain["logits"] > 3 * lora["logits"]


def test_flops_and_throughput_scale_with_method_and_device():
    shape = Shape.from_config(SMOLLM2)
    assert flops_per_token(shape, "full", 1) / flops_per_token(shape, "lora", 1) == pytest.approx(1.5, rel=0.01)  # 6N vs 4N
    assert flops_per_token(shape, "lora", 2048) > flops_per_token(shape, "lora", 512)  # attention grows with length
    cpu = estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=2e12)
    h100 = estimate(SMOLLM2, "lora", 8, 512, "h100")
    assert h100.tokens_per_s > 100 * cpu.tokens_per_s
    assert cpu.total_gib == pytest.approx(sum(cpu.memory_gib.values()), abs=0.01)
    with pytest.raises(TunesmithError, match="--method"):
        estimate(SMOLLM2, "prefix", 8, 512)
    with pytest.raises(TunesmithError, match="--device"):
        estimate(SMOLLM2, "lora", 8, 512, "tpu")


def test_activation_estimate_tracks_measured_saved_tensors(bundled_path):
    """Bytes saved for backward by one SmolLM2-shaped LoRA block under bf16 autocast, vs the per-token formula."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.estimate import activation_bytes_per_token_layer
    from tunesmith.objectives.sft import adapter_inputs_as_is

    config = AutoConfig.from_pretrained(bundled_path)
    config.num_hidden_layers = 1
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    saved: dict[int, int] = {}

    def pack(t):
        if t.dim() >= 2 and t.shape[0] == 3:  # activations lead with the batch dim; weights do not
            saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    ids = torch.randint(3, 400, (3, 128))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with adapter_inputs_as_is(model):  # as the SFT objective runs it
            model.base_model.model.model(input_ids=ids)
    shape = Shape.from_config(config.to_dict())
    predicted = activation_bytes_per_token_layer(shape, "lora", r=16) * ids.numel()
    measured = sum(saved.values())
    assert 0.85 < predicted / measured < 1.15, (predicted, measured)


def test_cli_prints_breakdown_and_json(capsys):
    main(["estimate", "--method", "full", "--device", "h100", "--batch", "4", "--seq-len", "256", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "full" and data["tokens_per_step"] == 1024
    assert set(data["memory_gib"]) == {"weights", "gradients", "optimizer", "activations", "logits", "runtime"}
    assert data["memory_gib"]["weights"] == pytest.approx(4 * 134_515_008 / GIB, abs=0.01)


def test_cli_bad_method_is_a_clean_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", "--method", "everything", "--device", "h100"])
    assert exit_.value.code == 2
    assert "unknown method" in capsys.readouterr().err
