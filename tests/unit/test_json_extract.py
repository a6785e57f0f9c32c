"""The quickstart task: deterministic, disjoint, derivable data, and the scorer on hand-made outputs."""

from __future__ import annotations

import json
import re

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.tasks.json_extract import (
    FIELDS,
    INSTRUCTION,
    MONTHS,
    NUMBER_WORDS,
    RESTAURANTS,
    TEMPLATES,
    make_split,
    target_json,
    write_quickstart,
)
from tunesmith.tasks.scoring import parse_json_object, score_json_extraction

TARGET = {"name": "Alice Smith", "party_size": 4, "date": "2026-03-03", "time": "19:30", "restaurant": "Luigi's"}


def _request(row: dict) -> str:
    instruction, request = row["messages"][0]["content"].split("\n\n", 1)
    assert instruction == INSTRUCTION
    return request


def _dates_in(text: str) -> set[str]:
    """Every date the request states, normalised to YYYY-MM-DD (an independent parser)."""
    found = set(re.findall(r"\b(\d{4}-\d{2}-\d{2})\b", text))
    month = "|".join(MONTHS)
    for m, d, y in re.findall(rf"\b({month}) (\d{{1,2}}), (\d{{4}})\b", text):
        found.add(f"{y}-{MONTHS.index(m) + 1:02d}-{int(d):02d}")
    for d, m, y in re.findall(rf"\b(\d{{1,2}}) ({month}) (\d{{4}})\b", text):
        found.add(f"{y}-{MONTHS.index(m) + 1:02d}-{int(d):02d}")
    return found


def _times_in(text: str) -> set[str]:
    """Every time of day the request states, as HH:MM 24h."""
    found = set()
    for h, mnt, ampm in re.findall(r"\b(\d{1,2})(?::(\d{2}))? (am|pm)\b", text):
        hour = int(h) % 12 + (12 if ampm == "pm" else 0)
        found.add(f"{hour:02d}:{mnt or '00'}")
    text_no_dates = re.sub(r"\d{4}-\d{2}-\d{2}", "", text)
    for h, mnt in re.findall(r"\b(\d{2}):(\d{2})\b(?! (?:am|pm))", text_no_dates):
        found.add(f"{h}:{mnt}")
    return found


def _party_sizes_in(text: str) -> set[int]:
    words = "|".join(NUMBER_WORDS[1:])
    pattern = rf"\b(\d{{1,2}}|{words})\b (?:people|guests|person)|(?:for|of|size) (\d{{1,2}}|{words})\b"
    found = set()
    for a, b in re.findall(pattern, text):
        token = a or b
        found.add(int(token) if token.isdigit() else NUMBER_WORDS.index(token))
    if "just me" in text:
        found.add(1)
    return found


def test_rows_are_messages_with_compact_json_answer_in_fixed_key_order():
    rows = make_split(50, seed=3)
    assert len(rows) == 50
    for row in rows:
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert list(row["target"]) == list(FIELDS)
        assert assistant["content"] == json.dumps(row["target"], separators=(", ", ": "))
        assert json.loads(assistant["content"]) == row["target"]
    pinned = {"name": "Eva Fischer", "party_size": 7, "date": "2025-03-24", "time": "15:45", "restaurant": "Seoul Kitchen"}
    first = make_split(1, seed=0)[0]
    assert first["target"] == pinned
    assert first["messages"][1]["content"] == (
        '{"name": "Eva Fischer", "party_size": 7, "date": "2025-03-24", "time": "15:45", "restaurant": "Seoul Kitchen"}'
    )


def test_every_target_field_is_stated_in_the_request():
    for row in make_split(400, seed=1):
        text, target = _request(row), row["target"]
        assert target["name"] in text
        assert target["restaurant"] in text
        assert _dates_in(text) == {target["date"]}, text
        assert _times_in(text) == {target["time"]}, text
        assert target["party_size"] in _party_sizes_in(text), text
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target["date"]) and re.fullmatch(r"\d{2}:\d{2}", target["time"])
        assert isinstance(target["party_size"], int) and 1 <= target["party_size"] <= 12


def test_phrasings_and_renderings_are_varied():
    rows = make_split(600, seed=2)
    texts = [_request(r) for r in rows]
    assert len(TEMPLATES) >= 15
    assert len({r["target"]["restaurant"] for r in rows}) == len(RESTAURANTS)
    assert any(re.search(r"\d{4}-\d{2}-\d{2}", t) for t in texts)
    assert any(re.search(r"[A-Z][a-z]+ \d{1,2}, \d{4}", t) for t in texts)
    assert any(re.search(r"\d{1,2} [A-Z][a-z]+ \d{4}", t) for t in texts)
    assert any(re.search(r"\d pm", t) for t in texts) and any(re.search(r"\b1\d:\d\d\b", t) for t in texts)
    assert any(re.search(r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b", t) for t in texts)


def test_write_quickstart_is_deterministic_and_disjoint(tmp_path):
    a = write_quickstart(tmp_path / "a", n_train=300, n_eval=60, seed=5)
    b = write_quickstart(tmp_path / "b", n_train=300, n_eval=60, seed=5)
    c = write_quickstart(tmp_path / "c", n_train=300, n_eval=60, seed=6)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert a["eval"].read_bytes() == b["eval"].read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()
    train = [json.loads(line) for line in a["train"].read_text().splitlines()]
    evals = [json.loads(line) for line in a["eval"].read_text().splitlines()]
    assert (len(train), len(evals)) == (300, 60)
    train_users = {r["messages"][0]["content"] for r in train}
    eval_users = {r["messages"][0]["content"] for r in evals}
    assert len(train_users) == 300 and len(eval_users) == 60
    assert not train_users & eval_users


def test_make_split_honours_exclude():
    rows = make_split(30, seed=9)
    banned = {r["messages"][0]["content"] for r in rows[:10]}
    again = make_split(30, seed=9, exclude=banned)
    assert not banned & {r["messages"][0]["content"] for r in again}
    assert again[:20] == rows[10:30]  # same stream, the excluded rows are simply passed over


# ------------------------------------------------------------------ scoring


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(TARGET),
        "  \n" + json.dumps(TARGET) + "\n ",
        "```json\n" + json.dumps(TARGET) + "\n```",
        "```\n" + json.dumps(TARGET, indent=2) + "\n```",
    ],
)
def test_parse_json_object_accepts_whitespace_and_fences(text):
    assert parse_json_object(text) == TARGET


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[1, 2]", '"a string"', "42", '{"name": "Alice"', 'Sure! {"name": "Alice"}', "```json\n[1]\n```"],
)
def test_parse_json_object_rejects_non_objects(text):
    assert parse_json_object(text) is None


def test_score_on_hand_made_outputs():
    targets = [TARGET] * 5
    outputs = [
        json.dumps(TARGET),                                   # exact
        "```json\n" + json.dumps(TARGET) + "\n```",           # exact, fenced
        json.dumps({**TARGET, "party_size": "4"}),            # wrong type for party_size
        json.dumps({**TARGET, "time": "7:30 pm", "extra": 1}),  # wrong time, extra key
        "The booking is for Alice Smith.",                   # not JSON
    ]
    scores = score_json_extraction(outputs, targets)
    assert scores["n"] == 5
    assert scores["valid_json_rate"] == pytest.approx(4 / 5)
    assert scores["exact_match"] == pytest.approx(2 / 5)
    assert scores["field_accuracy"] == pytest.approx(
        {"name": 4 / 5, "party_size": 3 / 5, "date": 4 / 5, "time": 3 / 5, "restaurant": 4 / 5}
    )


def test_exact_match_is_type_strict_and_needs_the_same_keys():
    float_size = json.dumps({**TARGET, "party_size": 4.0})
    missing = json.dumps({k: v for k, v in TARGET.items() if k != "restaurant"})
    extra = json.dumps({**TARGET, "notes": ""})
    scores = score_json_extraction([float_size, missing, extra], [TARGET] * 3)
    assert scores["valid_json_rate"] == 1.0
    assert scores["exact_match"] == pytest.approx(0.0)
    assert scores["field_accuracy"]["party_size"] == pytest.approx(2 / 3)
    assert scores["field_accuracy"]["restaurant"] == pytest.approx(2 / 3)


def test_score_rejects_unpaired_lists_and_handles_empty():
    with pytest.raises(TunesmithError, match="2 outputs but 1 targets"):
        score_json_extraction(["{}", "{}"], [TARGET])
    assert score_json_extraction([], [])["exact_match"] == 0.0


def test_lenient_exact_match_ignores_chatter_around_the_first_object():
    chatty = "Sure! Here it is:\n" + json.dumps(TARGET) + "\n\nJSON:\n{\"name\": "
    wrong_first = '{"note": "x"} then ' + json.dumps(TARGET)
    scores = score_json_extraction([chatty, wrong_first, json.dumps(TARGET)], [TARGET] * 3)
    assert scores["valid_json_rate"] == pytest.approx(1 / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["lenient_exact_match"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ CLI


def test_task_cli_make_data_then_score(tiny_model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from tunesmith.cli import task

    app = typer.Typer()
    task.register(app)
    runner = CliRunner()
    made = runner.invoke(app, ["task", "make-data", "--out", str(tmp_path / "qs"), "--n-train", "20", "--n-eval", "3"])
    assert made.exit_code == 0, made.output
    assert len((tmp_path / "qs" / "train.jsonl").read_text().splitlines()) == 20
    out = tmp_path / "scores.json"
    scored = runner.invoke(app, ["task", "score", "--model", str(tiny_model_dir), "--data", str(tmp_path / "qs" / "eval.jsonl"),
                                 "--out", str(out), "--max-new-tokens", "4", "--dtype", "fp32"])
    assert scored.exit_code == 0, scored.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 3 and scores["exact_match"] == 0.0  # a random model cannot write the JSON
    assert len(scores["samples"]) == 3 and set(scores["samples"][0]) == {"row", "request", "output", "target"}
    assert [m["row"] for m in scores["mistakes"]] == [0, 1, 2]  # every wrong answer is kept, with its kind
    assert [m["kind"] for m in scores["mistakes"]] == scores["answer_kinds"] and "exact" not in scores["answer_kinds"]
    assert "exact match" in scored.output


def test_task_score_rejects_rows_without_target(tiny_model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from tunesmith.cli import task

    app = typer.Typer()
    task.register(app)
    bad = tmp_path / "eval.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    result = CliRunner().invoke(app, ["task", "score", "--model", str(tiny_model_dir), "--data", str(bad)])
    assert result.exit_code == 2
    assert "eval.jsonl:1: field 'target'" in " ".join(result.output.split())


def test_task_score_samples_each_request_k_times_seeded(tiny_model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from tunesmith.cli import task

    app = typer.Typer()
    task.register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["task", "make-data", "--out", str(tmp_path / "qs"), "--n-train", "2", "--n-eval", "3"]).exit_code == 0
    data = str(tmp_path / "qs" / "eval.jsonl")
    runs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["task", "score", "--model", str(tiny_model_dir), "--data", data, "--out", str(out),
                                     "--max-new-tokens", "6", "--dtype", "fp32", "--temperature", "1.0", "--samples", "4",
                                     "--seed", seed])
        assert result.exit_code == 0, result.output
        runs.append(json.loads(out.read_text()))
    assert runs[0]["n"] == 12 and runs[0]["decoding"] == {"temperature": 1.0, "samples_per_row": 4, "seed": 1}
    assert runs[0]["samples"] == runs[1]["samples"]  # same seed, same answers
    assert [m["row"] for m in runs[0]["mistakes"]] == [0, 1, 2] * 4  # sample k of row i sits at i + k * rows
    assert runs[0]["samples"] != runs[2]["samples"]  # another seed samples other answers from the random model
    refused = runner.invoke(app, ["task", "score", "--model", str(tiny_model_dir), "--data", data, "--samples", "3"])
    assert refused.exit_code == 2 and "--temperature > 0" in refused.output


def test_incomplete_requests_leave_one_field_out_and_the_target_holds_null():
    rows = make_split(200, seed=5, missing=("time", "party_size"))
    assert [r["target"]["time"] is None for r in rows[:4]] == [True, False, True, False]
    for row in rows:
        text, target = _request(row), row["target"]
        missing = [k for k, v in target.items() if v is None]
        assert len(missing) == 1 and target["name"] in text and target["restaurant"] in text
        assert _dates_in(text) == {target["date"]}, text
        if missing == ["time"]:
            assert _times_in(text) == set() and target["party_size"] in _party_sizes_in(text), text
        else:
            assert _times_in(text) == {target["time"]} and not re.search(r"\b(people|guests|party of|group of|person)\b", text), text
        assert row["messages"][1]["content"] == target_json(target) and f'"{missing[0]}": null' in target_json(target)
    # the complete requests (the quickstart data) do not change with the new argument
    assert make_split(50, seed=5) == make_split(50, seed=5, missing=())
