"""The bundled alignment demo configs (configs/rm_demo.yaml, dpo_demo.yaml, dpo_sft_demo.yaml, dpo_quickstart.yaml)
validate end to end with a tiny model swapped in, on data written by `tunesmith task make-prefs`; the real runs are
in notes/align-pref.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunesmith.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prefs")
    main(["task", "make-prefs", "--out", str(out), "--n-train", "12", "--n-eval", "6", "--kinds", "time_shift,date_shift,swapped_fields,time_12h"])
    return out


def _table_text(out: str) -> str:
    """validate's table as plain words (box characters and line wraps removed)."""
    return re.sub(r"[\u2500-\u257f\s]+", " ", out)


def _overrides(tiny_model_dir: Path, prefs: Path, tmp_path: Path) -> list[str]:
    return [f"model.name_or_path={tiny_model_dir}", "model.dtype=fp32",
            f"data.train=[{{path: {prefs / 'train.jsonl'}}}]", f"data.eval=[{{path: {prefs / 'eval.jsonl'}}}]",
            f"output.dir={tmp_path / 'run'}", "output.tensorboard=false"]


def test_rm_demo_config_validates_with_a_tiny_model(tmp_path, tiny_model_dir, prefs, capsys):
    main(["validate", str(ROOT / "configs/rm_demo.yaml"), *_overrides(tiny_model_dir, prefs, tmp_path), "--no-time-step"])
    text = _table_text(capsys.readouterr().out)
    assert "objective rm" in text and "eval rows 6" in text and "24 rows" in text  # 12 pairs = 24 sequences
    assert "2 optimizer steps" in text  # 12 pairs / batch 8


@pytest.mark.parametrize(("config", "steps"), [("dpo_demo.yaml", 2), ("dpo_sft_demo.yaml", 2), ("dpo_quickstart.yaml", 6)])
def test_dpo_demo_config_validates_from_an_adapter_with_precomputed_reference(config, steps, tmp_path, tiny_model_dir, prefs, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "sft-adapter"  # stands in for runs/quickstart-short/adapter
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).save_pretrained(adapter)
    overrides = _overrides(tiny_model_dir, prefs, tmp_path) + [f"model.adapter={adapter}", f"align.ref_logps_cache={tmp_path / 'cache'}"]
    main(["validate", str(ROOT / "configs" / config), *overrides, "--no-time-step"])
    text = _table_text(capsys.readouterr().out)
    assert "objective dpo, reference: copy" in text  # started from an adapter: a frozen copy of it
    assert "eval rows 6" in text and "24 rows" in text and f"{steps} optimizer steps" in text  # 12 pairs, batch 8 (quickstart: 4, 2 epochs)
