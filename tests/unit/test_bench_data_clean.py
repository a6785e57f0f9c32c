"""bench/data_clean.py: the planted input, the scoring against it, and tunesmith's dedup on a small planted file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "data_clean.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_data_clean", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_score_counts_precision_and_recall_per_kind(bench):
    truth = {"exact": [[3, 1], [4, 2]], "near": [[5, 1, 0.9], [6, 2, 0.85], [7, 1, 0.7]]}
    s = bench.score({3, 5, 7, 9}, truth, threshold=0.8)
    assert (s["removed"], s["planted"], s["true_positives"], s["false_positives"]) == (4, 5, 3, 1)
    assert s["precision"] == 0.75 and s["recall"] == 0.6
    assert s["recall_exact"] == 0.5 and s["recall_near"] == round(2 / 3, 4)
    assert s["recall_near_j>=0.8"] == 0.5 and s["recall_near_j<0.8"] == 1.0
    assert s["precision_strict_j>=0.8"] == 0.5  # removing the J=0.7 copy is not a hit under the strict truth
    assert bench.score(set(), truth)["precision"] == 1.0


def test_group_score_accepts_any_kept_member_but_not_an_emptied_group(bench):
    truth = {"exact": [[3, 1], [4, 2]], "near": [[5, 1, 0.9], [6, 2, 0.85]]}  # groups {1,3,5} and {2,4,6}
    kept_copy = bench.score({1, 5, 4, 6}, truth)  # group 1 keeps its copy 3 (not the source): still right
    assert kept_copy["false_positives"] == 1 and kept_copy["precision_groups"] == 1.0 and kept_copy["recall_groups"] == 1.0
    emptied = bench.score({1, 3, 5, 9}, truth)  # group 1 removed entirely (one too many), row 9 is no copy
    assert emptied["precision_groups"] == 0.5 and emptied["recall_groups"] == 0.5


def test_old_truth_files_get_their_exact_sources(bench, tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"a": 1}\n{"a": 2}\n{"a": 1}\n{"a": 2}\n')
    assert bench._exact_sources(src, {"exact": [3, 4], "near": []})["exact"] == [[3, 1], [4, 2]]


def test_planted_rows_match_their_truth(bench, tmp_path):
    src = tmp_path / "chat.jsonl"
    truth = bench.make_rows(src, 400, seed=3)
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    text = {i + 1: "\n".join(m["content"] for m in r["messages"]) for i, r in enumerate(rows)}
    assert len(rows) == 400 and truth["exact"] and truth["near"]
    for line, src_line in truth["exact"]:  # an exact copy has the same text as an earlier row
        assert src_line < line and text[line] == text[src_line]
    for line, src_line, j in truth["near"]:
        assert src_line < line and text[line] != text[src_line]
        assert bench.jaccard(text[line], text[src_line]) == pytest.approx(j, abs=1e-4)
    assert bench.make_rows(tmp_path / "again.jsonl", 400, seed=3) == truth  # deterministic
    assert (tmp_path / "again.jsonl").read_bytes() == src.read_bytes()


def test_tunesmith_dedup_on_planted_rows_meets_the_bar(bench, tmp_path):
    """Issue 4's bar (precision and recall >= 0.95) on the bench's own planted input, 600 rows."""
    src = tmp_path / "chat.jsonl"
    truth = bench.make_rows(src, 600, seed=1)
    from tunesmith.data.clean.pipeline import clean_file, side_paths

    out = tmp_path / "out.jsonl"
    clean_file(src, out, {"stages": ["normalize", "exact_dedup", "near_dedup"]}, manifest=False)
    removed = {json.loads(x)["line"] for x in side_paths(out)["removed"].read_text().splitlines()}
    s = bench.score(removed, truth)
    assert s["planted"] > 40
    assert s["precision"] >= 0.95 and s["recall"] >= 0.95 and s["recall_exact"] == 1.0
