"""bench/sft_vs_trl.py helpers: the DPO job's preference set is deterministic and readable by tunesmith as-is
(TRL reads the same conversational file), and torch.compile time is split from steady-state throughput."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import make_stdlib_data
        import sft_vs_trl
    finally:
        sys.path.remove(str(BENCH))
    return sft_vs_trl, make_stdlib_data


def test_preference_pairs_are_deterministic_and_tokenise_in_tunesmith(bench, tokenizer, tmp_path):
    from tunesmith.data.preference import load_preference_examples
    from tunesmith.errors import SkipReport

    sft_vs_trl, data = bench
    rows = data.docstring_rows(0)[:40]
    pairs = [sft_vs_trl.as_preference(r, i) for i, r in enumerate(rows)]
    assert pairs == [sft_vs_trl.as_preference(r, i) for i, r in enumerate(rows)]
    assert all(p["chosen"][0]["content"] == r["output"] != p["rejected"][0]["content"] for p, r in zip(pairs, rows))
    assert all(len(p["rejected"][0]["content"]) < len(p["chosen"][0]["content"]) for p in pairs)
    data.write(tmp_path / "preference.jsonl", pairs)
    report = SkipReport()
    examples = load_preference_examples(str(tmp_path / "preference.jsonl"), tokenizer, "pairwise", max_length=512, report=report)
    assert (report.total, report.kept, report.skipped) == (40, 40, 0) and len(examples) == 40
    first = examples[0]
    assert first.chosen.input_ids[: first.prompt_len] == first.rejected.input_ids[: first.prompt_len]


def test_compile_time_is_reported_apart_from_steady_state(bench):
    sft_vs_trl, _ = bench
    times = [40.0, 12.0, 2.0, 2.5, 9.0, 2.0]  # step 1 compiles, step 2 recompiles (new shape), step 5 too
    tokens = [1000, 1000, 1000, 1000, 1000, 1000]
    compile_s = [38.0, 10.0, 0.0, 0.0, 7.0, 0.01]
    out = sft_vs_trl.compile_summary(times, tokens, compile_s, warmup=1)
    assert out["compile_s"] == 55.01 and out["compile_steps"] == [1, 2, 5]
    assert out["steady_steps"] == 3 and out["tokens_per_s_steady"] == 500.0  # median of 500, 400, 500


def test_jobs_are_selectable_and_lora_keeps_the_original_table(bench):
    sft_vs_trl, _ = bench
    assert set(sft_vs_trl.JOBS) == {"lora", "full", "dpo"}
    assert sft_vs_trl.markers("lora") == ("<!-- results:start -->", "<!-- results:end -->")
    assert sft_vs_trl.markers("dpo") == ("<!-- results-dpo:start -->", "<!-- results-dpo:end -->")


def test_variants_that_cannot_run_say_why_instead_of_crashing(bench):
    """tunesmith-qlora needs method.kind qlora in the schema and bitsandbytes; the glibc malloc variants are refused
    on CUDA; TRL runs anywhere."""
    import importlib.util
    import typing

    from tunesmith.config.schema import MethodConfig

    sft_vs_trl, _ = bench
    assert sft_vs_trl.VARIANTS["tunesmith-bf16"] == {"dtype": "bf16"}
    assert sft_vs_trl.VARIANTS["tunesmith-qlora"] == {"method": "qlora"}
    assert sft_vs_trl.variant_unavailable("tunesmith", "lora") is None
    assert sft_vs_trl.variant_unavailable("trl", "lora", "cuda") is None
    assert sft_vs_trl.variant_unavailable("tunesmith", "lora", "cuda") is None
    assert "CPU-only" in sft_vs_trl.variant_unavailable("tunesmith-gc2-lowmem", "lora", "cuda")
    assert "SFT jobs only" in sft_vs_trl.variant_unavailable("tunesmith-packed", "dpo")
    assert "full job" in sft_vs_trl.variant_unavailable("tunesmith-qlora", "full")
    assert "dpo job only" in sft_vs_trl.variant_unavailable("tunesmith-precomputed-ref", "lora")
    assert sft_vs_trl.variant_unavailable("tunesmith-precomputed-ref", "dpo") is None
    assert "full job" in sft_vs_trl.variant_unavailable("tunesmith-amp-gc", "lora")
    assert sft_vs_trl.variant_unavailable("tunesmith-amp-gc", "full") is None
    why = sft_vs_trl.variant_unavailable("tunesmith-qlora", "lora")
    if "qlora" not in typing.get_args(MethodConfig.model_fields["kind"].annotation):
        assert "no method.kind 'qlora'" in why
    elif importlib.util.find_spec("bitsandbytes") is None:
        assert "bitsandbytes" in why
    else:
        assert why is None
    with pytest.raises(SystemExit, match="CPU-only"):  # the worker checks again
        import argparse

        sft_vs_trl.worker_tunesmith(argparse.Namespace(job="lora", device="cuda"), sft_vs_trl.VARIANTS["tunesmith-lowmem"])


def _record(machine: dict, summary: dict, **extra) -> dict:
    return {"job_name": "lora", "job": {"method": "lora", "objective": "sft", "batch": 8, "max_length": 512},
            "machine": machine, "steps": 2, "warmup": 1, "load_before": [0.5, 0.7], "summary": summary,
            "estimate_check": {}, **extra}


def test_table_names_the_machine_capability_and_refused_rows(bench, tmp_path):
    sft_vs_trl, _ = bench
    import _harness

    info = sft_vs_trl.machine("cpu")
    assert info["cpu_capability"] and isinstance(info["bf16_native"], bool) and info["gpu"] is None
    assert info["slug"].endswith(f"-{info['cores']}c-{info['cpu_capability'].lower()}")  # e.g. amd-epyc-2c-avx2
    runs = [{"impl": "tunesmith", "tokens_per_s_median": 300.0, "tokens_per_s_aggregate": 290.0, "sec_per_step_median": 2.0,
             "peak_rss_mb": 3000, "final_loss": 3.0, "first_step_s": 3.0, "max_step_tokens": 4096},
            {"impl": "trl-fp32", "tokens_per_s_median": 100.0, "tokens_per_s_aggregate": 95.0, "sec_per_step_median": 6.0,
             "peak_rss_mb": 6000, "final_loss": 2.9, "first_step_s": 7.0, "max_step_tokens": 1800},
            {"impl": "tunesmith-qlora", "error": "tunesmith-qlora: no method.kind 'qlora' yet", "refused": True}]
    summary = _harness.summarise(runs, baseline="trl-fp32")
    assert summary["tunesmith"]["speedup_vs_trl"] == 3.0 and summary["tunesmith"]["rss_vs_trl"] == 0.5
    assert summary["tunesmith-qlora"]["refused"]
    avx2 = {"cpu": "AMD EPYC", "cores": 2, "cpu_capability": "AVX2", "bf16_native": False}
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
    sft_vs_trl.update_readme(readme, _record(avx2, summary, baseline="trl-fp32"), "results/x.json")
    text = readme.read_text()
    assert "torch CPU capability AVX2, bf16 emulated, so model.dtype auto = fp32" in text and "old" not in text
    assert "| tunesmith-qlora | not run: tunesmith-qlora: no method.kind 'qlora' yet |" in text
    assert "vs trl-fp32 speed" in text and text.endswith("after\n")
    gpu = {**avx2, "gpu": "NVIDIA H100 80GB HBM3"}  # another machine or model: a table of its own
    sft_vs_trl.update_readme(readme, _record(gpu, summary, tag="cuda-llama-1b", model_label="llama-1b", device="cuda"),
                             "results/y.json")
    text = readme.read_text()
    assert "<!-- results-lora-cuda-llama-1b:start -->" in text and "GPU NVIDIA H100 80GB HBM3" in text
    assert text.count("Latest:") == 2 and "model `llama-1b`, device cuda" in text
    older = {"cpu": "AMD EPYC", "cores": 2}  # records written before the capability keys existed
    assert _harness.machine_line(older) == "AMD EPYC, 2 cores"


def test_random_llama_preset_is_built_once_and_loads_in_both(bench, bundled_path, tmp_path):
    """--model-config llama-tiny: random weights from a LlamaConfig plus the bundled tokenizer in one folder that
    transformers (TRL's loader) and tunesmith's loader both read; the second call reuses the folder."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import _models
    from tunesmith.config.schema import ModelConfig
    from tunesmith.models.load import load_model, load_tokenizer

    label, folder = _models.build_random_model("llama-tiny", tmp_path, str(bundled_path))
    assert label == "llama-tiny" and (folder / "config.json").is_file()
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert _models.build_random_model("llama-tiny", tmp_path, str(bundled_path)) == (label, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp  # not rebuilt
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == _models.param_count(config)
    assert model.config.hidden_size == _models.PRESETS["llama-tiny"]["hidden_size"]
    ours, ours_tok = load_model(ModelConfig(name_or_path=str(folder), dtype="fp32")), load_tokenizer(str(folder))
    assert torch.equal(ours.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert ours_tok("def f(): pass")["input_ids"] == tokenizer("def f(): pass")["input_ids"]
    (tmp_path / "custom.json").write_text(json.dumps({"model_type": "llama", **_models.PRESETS["llama-tiny"], "num_hidden_layers": 1}))
    assert _models.config_fields(str(tmp_path / "custom.json")) == ("custom", {**_models.DEFAULTS, **_models.PRESETS["llama-tiny"],
                                                                              "num_hidden_layers": 1})
    with pytest.raises(SystemExit, match="neither a preset"):
        _models.config_fields(str(tmp_path / "missing.json"))


def test_trl_rows_put_tunesmiths_first_batch_at_step_two_among_shuffled_rows(bench, tmp_path):
    """TRL (sequential sampler) meets the batch tunesmith serves first at step 2 (its optimizer state then exists,
    as mid-epoch) or step 1, so both peaks measure the same worst case; every other row comes once, shuffled."""
    import json

    sft_vs_trl, _ = bench
    path = tmp_path / "rows.jsonl"
    rows = [{"i": i} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sft_vs_trl.trl_rows(path, []) == rows  # --trl-order random: the file as it is
    worst = [{"i": 7}, {"i": 2}, {"i": 9}]
    ordered = sft_vs_trl.trl_rows(path, [7, 2, 9], 2, seed=0)
    assert ordered[3:6] == worst and {r["i"] for r in ordered[:3]}.isdisjoint({7, 2, 9})
    assert sft_vs_trl.trl_rows(path, [7, 2, 9], 1)[:3] == worst
    assert sorted(r["i"] for r in ordered) == list(range(12))
    assert ordered == sft_vs_trl.trl_rows(path, [7, 2, 9], 2, seed=0) != sft_vs_trl.trl_rows(path, [7, 2, 9], seed=1)
    others = [r["i"] for r in ordered if r not in worst]
    assert others != sorted(others)  # shuffled, not in file order


def test_ceiling_counts_the_least_work_of_each_job(bench):
    """bench/ceiling.py on a hand-sized model: LoRA = forward + input grads (+ adapters x3), full = 3 passes,
    DPO = LoRA policy + reference forward on the pair's merged row (shared prompt once), heads at supervised
    positions only; numbers worked out by hand in the comments."""
    sys.path.insert(0, str(BENCH))
    try:
        import ceiling
    finally:
        sys.path.remove(str(BENCH))
    from tunesmith.data.preference import PairExample
    from tunesmith.data.templates import Example
    from tunesmith.estimate import Shape

    shape = Shape(vocab=10, hidden=4, layers=1, intermediate=8, q_dim=4, kv_dim=4, tied=True, heads=1)
    # per token: linear forward 2*160 = 320, LoRA r=2 forward 2*136 = 272; head 2*10*4 = 80; attention pair 16
    row = Example([1, 2, 3, 4, 5], [-100, -100, 3, 4, 5], "x.jsonl", 1, False)  # 3 supervised, 15 causal pairs
    lora = ceiling.job_work([row], shape, {"objective": "sft", "method": "lora"}, r=2)
    assert lora["real_tokens"] == 5 and lora["flops"] == 5 * (2 * 320 + 3 * 272) + 3 * 2 * 80 + 15 * 3 * 16
    full = ceiling.job_work([row], shape, {"objective": "sft", "method": "full"}, r=2)
    assert full["flops"] == 5 * 3 * 320 + 3 * 3 * 80 + 15 * 3 * 16
    rejected = Example([1, 2, 7, 8], [-100, -100, 7, 8], "x.jsonl", 1, False)  # shares 2 tokens, 2-token tail
    dpo = ceiling.job_work([PairExample(row, rejected, prompt_len=2)], shape, {"objective": "dpo", "method": "lora"}, r=2)
    # merged row 5 + 2 = 7 tokens; attention 15 + 2*2 + 3 = 22 pairs; 3 + 2 supervised
    assert dpo["real_tokens"] == 9 and dpo["flops"] == 7 * (3 * 320 + 3 * 272) + 5 * 3 * 80 + 22 * 4 * 16


def test_a_second_results_file_of_the_day_never_overwrites_the_first(bench, tmp_path):
    from _harness import unused_path  # importable: the bench fixture loaded sft_vs_trl, which imports it

    first = tmp_path / "2026-12-07-box.json"
    assert unused_path(first) == first
    first.write_text("{}")
    second = unused_path(first)
    assert second.name == "2026-12-07-box-2.json"
    second.write_text("{}")
    assert unused_path(first).name == "2026-12-07-box-3.json" and first.read_text() == "{}"
