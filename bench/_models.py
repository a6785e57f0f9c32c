"""Random-weight Llama models for the bench (`--model-config PATH|preset`): a LlamaConfig (a preset below, or a
config.json file / folder), random weights from a fixed seed, saved once with the bundled SmolLM2 tokenizer to
an HF folder that tunesmith and TRL both load as-is. The folder is keyed by the config, so reruns reuse it.

Presets (vocabulary = the bundled tokenizer's 49,152): `llama-tiny` (tests, ~3M), `llama-0.5b` (~0.48B),
`llama-1b` (Llama-3.2-1B's block shapes, ~1.07B).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PRESETS: dict[str, dict] = {
    "llama-tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "tie_word_embeddings": True},
    "llama-0.5b": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 28, "num_attention_heads": 16,
                   "num_key_value_heads": 4, "tie_word_embeddings": True},
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "tie_word_embeddings": True, "rope_theta": 500000.0},
}
DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False,
            "mlp_bias": False}
SEED = 0


def config_fields(spec: str) -> tuple[str, dict]:
    """(label, LlamaConfig fields) for a preset name, a config.json path or a folder holding one."""
    if spec in PRESETS:
        return spec, {**DEFAULTS, **PRESETS[spec]}
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise SystemExit(f"--model-config: '{spec}' is neither a preset ({', '.join(PRESETS)}) nor a config.json file")
    fields = json.loads(path.read_text())
    if fields.get("model_type", "llama") != "llama":
        raise SystemExit(f"--model-config: {path} is a '{fields['model_type']}' config; the bench builds Llama models")
    keep = {k: v for k, v in fields.items() if not k.startswith("_") and k not in ("architectures", "model_type", "transformers_version")}
    return path.parent.name if path.name == "config.json" else path.stem, {**DEFAULTS, **keep}


def build_random_model(spec: str, cache_root: Path, tokenizer_source: str) -> tuple[str, Path]:
    """(label, folder) of a random-weight Llama built from `spec` with the tokenizer of `tokenizer_source`; built
    once per config (weights in bf16 safetensors: both loaders cast to the dtype they train in)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    label, fields = config_fields(spec)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    fields = {**fields, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    key = hashlib.sha256(json.dumps({"fields": fields, "seed": SEED}, sort_keys=True).encode()).hexdigest()[:10]
    folder = cache_root / f"{label}-{key}"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return label, folder
    config = LlamaConfig(**fields)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return label, folder


def param_count(fields: dict) -> int:
    """Parameters of a Llama with these fields (no bias, tied or untied embeddings), for the preset docstring."""
    h, i, layers, heads = fields["hidden_size"], fields["intermediate_size"], fields["num_hidden_layers"], fields["num_attention_heads"]
    head_dim = fields.get("head_dim") or h // heads
    q, kv = heads * head_dim, fields.get("num_key_value_heads", heads) * head_dim
    block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    vocab = fields.get("vocab_size", 49152)
    return layers * block + vocab * h * (1 if fields.get("tie_word_embeddings") else 2) + h
