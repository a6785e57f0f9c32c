"""Slow checks on the real bundled SmolLM2-135M-Instruct (run with `make test-slow`)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config.load import load_config
from tunesmith.models.load import resolve_dtype
from tunesmith.tasks.json_extract import write_quickstart
from tunesmith.training.run import run_training

pytestmark = pytest.mark.slow


def test_bundled_model_lora_sft_learns_the_quickstart_format(tmp_path, bundled_path):
    paths = write_quickstart(tmp_path / "data", n_train=96, n_eval=16, seed=0)
    cfg = load_config("configs/quickstart.yaml", [
        f"data.train=[{{path: {paths['train']}}}]", f"data.eval=[{{path: {paths['eval']}}}]",
        "train.max_steps=12", "train.eval_every=6", "train.save_every=6", f"output.dir={tmp_path / 'run'}",
    ])
    from tunesmith.training.batches import eval_batches
    from tunesmith.training.loop import evaluate_loss
    from tunesmith.training.run import build_model, prepare_data

    data = prepare_data(cfg)
    base_loss = evaluate_loss(build_model(cfg), eval_batches(data.eval, 8, data.tokenizer.pad_token_id))["loss"]
    result = run_training(cfg, show_progress=False)
    evals = [h["eval_loss"] for h in result.history if "eval_loss" in h]
    assert len(evals) == 2 and evals[1] < evals[0] < 0.2 * base_loss  # held-out JSON answers: loss falls 5x+ in 6 steps
    frozen = [p for n, p in result.model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.dtype == resolve_dtype('auto') for p in frozen)  # bf16 where native
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()

