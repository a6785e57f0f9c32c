"""Judge verdict parsing, both-order outcomes, win-rate intervals, the verdict cache, items and a local-model judge."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from tunesmith.errors import DataError, TunesmithError
from tunesmith.evaluation.config import JudgeSpec, parse_config
from tunesmith.evaluation.judge import (Judge, VerdictCache, grade, load_judge_items, pairwise_outcome, parse_rating,
                                        parse_verdict, win_rate)


@pytest.mark.parametrize("text,expected", [
    ("The answer is clear and correct.\nRating: [[7]]", 7.0),
    ("Rating: [[7.5]]", 7.5),
    ("Rating: [[10]]", 10.0),
    ("I first thought [[3]] but on reflection Rating: [[6]]", 6.0),  # the last rating counts
    ("Rating: [9]", 9.0),  # MT-Bench's single-bracket fallback
    ("Rating: [[11]]", None),  # outside 1..10
    ("Rating: [[0]]", None),
    ("Rating: 7/10", None),
    ("", None),
    (None, None),
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("A is more detailed. [[A]]", "A"), ("[[B]]", "B"), ("Both equal: [[C]]", "tie"),
    ("[[A]] or maybe [[B]]", None), ("A is better", None), ("[A]", None), (None, None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_pairwise_outcome_wins_only_when_preferred_in_both_orders():
    table = {(f, s): pairwise_outcome(f, s) for f, s in itertools.product(["A", "B", "tie"], repeat=2)}
    assert table[("A", "B")] == (1.0, False) and table[("B", "A")] == (0.0, False)
    assert table[("A", "A")] == (0.5, True) and table[("B", "B")] == (0.5, True)  # self-disagreement -> tie
    assert all(table[k] == (0.5, False) for k in [("tie", "tie"), ("A", "tie"), ("tie", "B"), ("B", "tie"), ("tie", "A")])


def test_win_rate_mean_and_interval_match_the_normal_approximation():
    scores = [1.0] * 28 + [0.0] * 12  # p = 0.7, n = 40
    res = win_rate(scores, n_resamples=4000, seed=1)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 40)
    assert res["win_rate"] == pytest.approx(0.7)
    assert res["win_rate_ci_low"] == pytest.approx(0.7 - half, abs=0.03) and res["win_rate_ci_high"] == pytest.approx(0.7 + half, abs=0.03)
    ties = win_rate([0.5] * 10)
    assert (ties["win_rate"], ties["win_rate_ci_low"], ties["win_rate_ci_high"]) == (0.5, 0.5, 0.5)


def test_verdict_cache_survives_a_cut_line(tmp_path):
    cache = VerdictCache(tmp_path)
    cache.put_many([("k1", "Rating: [[4]]"), ("k2", "x")])
    with (tmp_path / "verdicts.jsonl").open("a") as handle:
        handle.write('{"key": "k3", "te')  # a crash mid-write
    again = VerdictCache(tmp_path)
    assert again.data == {"k1": "Rating: [[4]]", "k2": "x"}
    assert VerdictCache(None).path is None


def test_judge_items_bundled_and_from_file(tmp_path):
    bundled = load_judge_items(None, "pairwise", limit=3)
    assert len(bundled) == 3 and all(i["reference"] for i in bundled)
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "reference": "Hello"}) + "\n" + json.dumps({"prompt": "No ref"}) + "\n")
    assert [i["reference"] for i in load_judge_items(str(path), "single")] == ["Hello", None]
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'reference' missing: pairwise"):
        load_judge_items(str(path), "pairwise")


def test_judge_config_needs_a_judge_and_never_dumps_the_key(tmp_path):
    with pytest.raises(TunesmithError, match="suite 'j' \\(judge\\) needs `judge:`"):
        parse_config({"models": [{"name": "a"}], "suites": [{"name": "j", "kind": "judge"}]})
    cfg = parse_config({"models": [{"name": "a"}], "suites": [{"name": "j", "kind": "judge", "mode": "pairwise",
                        "judge": {"endpoint": "http://127.0.0.1:9", "model": "m", "api_key": "sk-secret"}}],
                        "output_dir": str(tmp_path)})
    assert cfg.suites[0].judge.cache == str(tmp_path / "cache" / "judge")
    assert "sk-secret" not in json.dumps(cfg.model_dump()) and cfg.suites[0].judge.api_key == "sk-secret"
    with pytest.raises(TunesmithError, match="suites.0.mode"):
        parse_config({"models": [{"name": "a"}], "suites": [{"name": "j", "kind": "judge", "mode": "both", "judge": {}}]})


def test_local_model_judge_counts_unparsable_and_caches(tmp_path, tiny_model_dir):
    spec = JudgeSpec(model=str(tiny_model_dir), dtype="fp32", max_new_tokens=6, cache=str(tmp_path / "v"))
    judge = Judge(spec)
    graded = grade(judge, ["What is 2+2?", "Name a colour."], ["4", "Blue"])
    assert all(isinstance(g["judgement"], str) for g in graded)  # a loaded model always answers
    assert [g["rating"] for g in graded] == [parse_rating(g["judgement"]) for g in graded]
    again = Judge(spec)
    assert [g["judgement"] for g in grade(again, ["What is 2+2?", "Name a colour."], ["4", "Blue"])] == [g["judgement"] for g in graded]
    assert (again.asked, again.from_cache) == (0, 2)
    assert grade(again, ["What is 2+2?"], ["5"])[0]["judgement"] is not None and again.asked == 1  # a new answer is a new key
