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
