"""inspect: counts, lengths, duplicates, answer problems, task types, preference bias, reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.data.inspect import entropy_bits, inspect_file, task_type, write_html

CHAT = Path(__file__).resolve().parents[1] / "assets" / "dq_chat.jsonl"


def test_inspect_planted_chat_file_in_words():
    r = inspect_file(CHAT)
    assert (r["format"], r["rows"], r["rows_skipped"]) == ("messages", 12, 2)
    assert r["roles"] == {"user": 12, "assistant": 12} and r["turns"]["max"] == 2
    assert r["duplicates"]["exact"] == 1 and r["duplicates"]["exact_rate"] == round(1 / 12, 4)
    assert (r["answers"]["empty"], r["answers"]["truncated"], r["answers"]["refusals"]) == (1, 1, 1)
    assert r["lengths"]["user"]["max"] == 9 and r["length_unit"] == "words"
    assert r["tasks"]["question:what"] == 4 and sum(r["tasks"].values()) == 12
    assert r["task_entropy_bits"] == pytest.approx(entropy_bits(r["tasks"]), abs=1e-4)


def test_task_types_and_entropy():
    assert task_type("Please write a poem") == "write" and task_type("Why is the sky blue?") == "question:why"
    assert task_type("The cat sat.") == "other" and task_type("") == "other"
    assert entropy_bits({"a": 5, "b": 5}) == 1.0 and entropy_bits({"a": 3}) == 0.0
    assert entropy_bits({"a": 1, "b": 1, "c": 1, "d": 1}) == math.log2(4)


def test_preference_length_bias_with_tokenizer(tmp_path, tokenizer):
    rows = [{"prompt": "Say hi", "chosen": "Hello there, friend! Nice to meet you.", "rejected": "Hi."},
            {"prompt": "Add 1+1", "chosen": "2", "rejected": "The answer is two."}]
    p = tmp_path / "pref.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = inspect_file(p, tokenizer)
    assert r["format"] == "preference" and r["length_unit"] == "tokens"
    c = [len(tokenizer(x["chosen"], add_special_tokens=False)["input_ids"]) for x in rows]
    j = [len(tokenizer(x["rejected"], add_special_tokens=False)["input_ids"]) for x in rows]
    assert r["preference"] == {"pairs": 2, "chosen_mean": sum(c) / 2, "rejected_mean": sum(j) / 2,
                               "chosen_longer_rate": 0.5, "mean_length_difference": (sum(c) - sum(j)) / 2}


def test_cli_inspect_writes_json_and_html(tmp_path, capsys):
    main(["data", "inspect", str(CHAT), "--no-tokenizer", "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert "12 rows" in out and "exact 1" in out
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 12
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "task distribution" in html
    r = inspect_file(CHAT)
    write_html(r, tmp_path / "x.html")
    assert (tmp_path / "x.html").stat().st_size > 5000
