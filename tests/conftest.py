"""Shared fixtures: the bundled tokenizer and tiny random Llama models built from a config in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.models.load import BUNDLED_ALIAS, resolve_model_path


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    """Safetensors folder of the bundled SmolLM2-135M-Instruct (converted once, then cached)."""
    return resolve_model_path(BUNDLED_ALIAS)


@pytest.fixture(scope="session")
def tokenizer(bundled_path):
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(str(bundled_path))


def build_tiny_model(folder: Path, tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64, init_std: float = 0.02) -> Path:
    """A random LlamaForCausalLM with the bundled tokenizer, saved as an HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """Folder of a tiny random model (2 layers, hidden 64) sharing the bundled tokenizer.

    Weights use std 0.2 (not 0.02) so logits are not near-uniform and a LoRA can move the loss in a few steps.
    """
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer, init_std=0.2)
