"""Formats -> Records: detection, column mapping, pinned message lists, and one clear error per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data.formats import FORMATS, Record, detect_format, load_records, to_record
from tunesmith.errors import DataError, SkipReport

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def write_jsonl(tmp_path: Path, name: str, rows: list) -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return p


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


def fails(path, **kw) -> DataError:
    with pytest.raises(DataError) as e:
        load_records(str(path), **kw)
    return e.value


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "row, fmt",
    [
        ({"messages": [u("q"), a("r")]}, "messages"),
        ({"conversations": [{"from": "human", "value": "q"}]}, "sharegpt"),
        ({"instruction": "q", "input": "", "output": "r"}, "alpaca"),
        ({"prompt": "q", "completion": "r"}, "prompt_completion"),
        ({"text": "t"}, "text"),
        # priority when several fit: messages > conversations > instruction/output > prompt/completion > text
        ({"messages": [], "conversations": [], "text": "t"}, "messages"),
        ({"conversations": [], "instruction": "q", "output": "r"}, "sharegpt"),
        ({"instruction": "q", "output": "r", "prompt": "p", "completion": "c", "text": "t"}, "alpaca"),
        ({"prompt": "p", "completion": "c", "text": "t"}, "prompt_completion"),
        # nothing fits
        ({"instruction": "q"}, None),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, None),
        ({"messages": None, "text": "t"}, "text"),  # a null column (Parquet/CSV) is no field
        ({}, None),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_detect_format_after_column_mapping():
    row = {"question": "q", "answer": "r"}
    assert detect_format(row) is None
    assert detect_format(row, {"instruction": "question", "output": "answer"}) == "alpaca"
    assert detect_format({"dialog": []}, {"messages": "dialog"}) == "messages"
    assert detect_format({"body": "x"}, {"text": "body"}) == "text"


@pytest.mark.parametrize(
    "asset, fmt, count",
    [
        ("fmt_alpaca.jsonl", "alpaca", 3),
        ("fmt_sharegpt.jsonl", "sharegpt", 2),
        ("fmt_messages.jsonl", "messages", 2),
        ("fmt_prompt_completion.jsonl", "prompt_completion", 2),
        ("fmt_text.jsonl", "text", 2),
        ("fmt_alpaca.json", "alpaca", 2),
    ],
)
def test_every_asset_loads_auto_and_explicit(asset, fmt, count):
    path = str(ASSETS / asset)
    auto, report = load_records(path)
    explicit, _ = load_records(path, fmt=fmt)
    assert auto == explicit and len(auto) == count
    assert (report.total, report.kept, report.skipped) == (count, count, 0)
    assert all(r.source == path for r in auto)
    assert set(FORMATS) == {"alpaca", "sharegpt", "messages", "prompt_completion", "text"}


# ---------------------------------------------------------------- pinned outputs


def test_alpaca_pinned_messages_with_input_and_history():
    records, _ = load_records(str(ASSETS / "fmt_alpaca.jsonl"))
    assert [r.line for r in records] == [1, 2, 4]
    assert records[0].messages == [u("Name the capital of France."), a("Paris.")]
    assert records[1].messages == [u("Translate to German.\n\nGood morning"), a("Guten Morgen")]
    assert records[2] == Record(
        messages=[
            s("You are a translator."),
            u("Translate to German: Good morning"),
            a("Guten Morgen"),
            u("And in French?"),
            a("Bonjour"),
            u("And in Italian?"),
            a("Buongiorno"),
        ],
        text=None,
        source=str(ASSETS / "fmt_alpaca.jsonl"),
        line=4,
    )


def test_sharegpt_pinned_messages_and_role_names():
    records, _ = load_records(str(ASSETS / "fmt_sharegpt.jsonl"))
    assert records[0].messages == [s("Be terse."), u("2+2?"), a("4"), u("And 3+3?"), a("6")]
    assert records[1].messages == [s("Answer in French."), u("Hello"), a("Bonjour")]


def test_messages_prompt_completion_and_text_pinned():
    msgs, _ = load_records(str(ASSETS / "fmt_messages.jsonl"))
    assert msgs[1].messages == [u("What is 1+1?"), a("2"), u("Times 3?"), a("6")]
    pc, _ = load_records(str(ASSETS / "fmt_prompt_completion.jsonl"))
    assert pc[0].messages == [u("The sky is"), a(" blue.")]
    assert pc[1].messages == [u("Say hi"), a("hi")]  # TRL conversational prompt-completion
    text, _ = load_records(str(ASSETS / "fmt_text.jsonl"))
    assert text[1] == Record(messages=[], text="Second document.\nWith two lines.", source=str(ASSETS / "fmt_text.jsonl"), line=2)


def test_csv_with_column_mapping():
    cols = {"instruction": "question", "input": "context", "output": "answer"}
    records, report = load_records(str(ASSETS / "fmt_qa.csv"), columns=cols)
    assert [r.messages for r in records] == [
        [u("Name the capital of France."), a("Paris.")],
        [u("Summarise, briefly.\n\nLine one\nline two"), a("Short.")],
    ]
    assert [r.line for r in records] == [1, 2] and report.kept == 2


def test_csv_cells_may_hold_messages_as_json(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('messages\n"' + json.dumps([u("q"), a("r")]).replace('"', '""') + '"\n', encoding="utf-8")
    records, _ = load_records(str(p))
    assert records[0].messages == [u("q"), a("r")]


def test_parquet_messages_file(tmp_path):
    p = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": [u("q1"), a("r1")]}, {"messages": [u("q2"), a("r2"), u("q3"), a("r3")]}]), p)
    records, report = load_records(str(p), system_prompt="Be kind.")
    assert records[1].messages == [s("Be kind."), u("q2"), a("r2"), u("q3"), a("r3")]
    assert [r.line for r in records] == [1, 2] and report.total == 2


def test_system_prompt_only_where_there_is_none():
    sys_first = {"messages": [s("Own."), u("q"), a("r")]}
    assert to_record(sys_first, "messages", "f.jsonl", 1, system_prompt="Default.").messages[0] == s("Own.")
    plain = {"instruction": "q", "output": "r"}
    assert to_record(plain, "alpaca", "f.jsonl", 1, system_prompt="Default.").messages == [s("Default."), u("q"), a("r")]
    assert to_record({"text": "t"}, "text", "f.jsonl", 1, system_prompt="Default.").messages == []


def test_to_record_applies_columns_and_keeps_extra_fields_out():
    row = {"q": "Hi", "r": "Hello", "id": 7}
    rec = to_record(row, "alpaca", "f.jsonl", 3, columns={"instruction": "q", "output": "r"})
    assert rec == Record(messages=[u("Hi"), a("Hello")], source="f.jsonl", line=3)


def test_sharegpt_role_aliases_and_role_content_keys():
    row = {"conversations": [{"from": "Human", "value": "q"}, {"from": "GPT", "value": "r"}, {"role": "user", "content": "q2"}, {"role": "model", "content": "r2"}]}
    assert to_record(row, "sharegpt", "f.jsonl", 1).messages == [u("q"), a("r"), u("q2"), a("r2")]


# ---------------------------------------------------------------- bad inputs: one clear error each


def assert_where(err: DataError, name: str, line: int | None, field: str | None):
    p = err.problem
    assert Path(p.file).name == name and p.line == line and p.field == field, p
    text = str(err)
    assert name in text and (line is None or f":{line}:" in text) and (field is None or field in text)


def test_malformed_json_line_through_load_records(tmp_path):
    p = write_jsonl(tmp_path, "broken.jsonl", [{"text": "a"}, '{"text": "b"'])
    err = fails(p)
    assert_where(err, "broken.jsonl", 2, None)
    assert "malformed JSON" in str(err) and "column" in str(err)


def test_non_utf8_through_load_records(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "na\xefve"}\n')
    err = fails(p)
    assert_where(err, "latin.jsonl", 2, None)
    assert "UTF-8" in str(err) and "byte offset" in str(err)


def test_empty_file_through_load_records(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert "file is empty" in str(fails(tmp_path / "empty.jsonl"))


def test_unknown_role(tmp_path):
    p = write_jsonl(tmp_path, "roles.jsonl", [{"messages": [u("q"), a("r")]}, {"messages": [u("q"), {"role": "tool", "content": "x"}]}])
    err = fails(p)
    assert_where(err, "roles.jsonl", 2, "messages[1].role")
    assert "unknown role 'tool'" in str(err) and "system, user, assistant" in str(err)
    p = write_jsonl(tmp_path, "sg.jsonl", [{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "r"}]}])
    err = fails(p)
    assert_where(err, "sg.jsonl", 1, "conversations[1].from")
    assert "'bot'" in str(err) and "human, user, gpt, assistant, model, system" in str(err)


def test_non_alternating(tmp_path):
    p = write_jsonl(tmp_path, "alt.jsonl", [{"messages": [s("x"), u("q"), u("q again"), a("r")]}])
    err = fails(p)
    assert_where(err, "alt.jsonl", 1, "messages[2].role")
    assert "alternate" in str(err) and err.reason == "bad roles"


def test_system_not_first(tmp_path):
    p = write_jsonl(tmp_path, "sys.jsonl", [{"messages": [u("q"), a("r"), s("late"), u("q2"), a("r2")]}])
    err = fails(p)
    assert_where(err, "sys.jsonl", 1, "messages[2].role")
    assert "system message may only come first" in str(err)


def test_ends_on_user(tmp_path):
    p = write_jsonl(tmp_path, "end.jsonl", [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}, {"from": "human", "value": "q2"}]}])
    err = fails(p)
    assert_where(err, "end.jsonl", 1, "conversations[2].from")
    assert "ends on a user turn" in str(err)


def test_empty_response(tmp_path):
    p = write_jsonl(tmp_path, "empty.jsonl", [{"messages": [u("q"), a("r"), u("q2"), a("  \n ")]}])
    err = fails(p)
    assert_where(err, "empty.jsonl", 1, "messages[3].content")
    assert "empty assistant response" in str(err) and err.reason == "empty response"
    err = fails(write_jsonl(tmp_path, "empty_alpaca.jsonl", [{"instruction": "q", "output": ""}]))
    assert_where(err, "empty_alpaca.jsonl", 1, "output")


def test_misspelled_field_suggests_the_known_name(tmp_path):
    p = write_jsonl(tmp_path, "typo.jsonl", [{"instuction": "q", "input": "", "output": "r"}])
    for fmt in ("auto", "alpaca"):
        err = fails(p, fmt=fmt)
        assert_where(err, "typo.jsonl", 1, "instruction")
        assert "'instuction'" in str(err) and "did you mean 'instruction'" in str(err) and err.reason == "missing field"
    err = fails(write_jsonl(tmp_path, "key.jsonl", [{"messages": [{"role": "user", "contnet": "q"}]}]))
    assert_where(err, "key.jsonl", 1, "messages[0].content")
    assert "did you mean 'content'" in str(err)


def test_wrong_type(tmp_path):
    p = write_jsonl(tmp_path, "type.jsonl", [{"messages": [u("q"), {"role": "assistant", "content": 42}]}])
    err = fails(p)
    assert_where(err, "type.jsonl", 1, "messages[1].content")
    assert "must be a string, got a number" in str(err) and err.reason == "wrong type"
    err = fails(write_jsonl(tmp_path, "hist.jsonl", [{"instruction": "q", "output": "r", "history": [["only user"]]}]))
    assert_where(err, "hist.jsonl", 1, "history[0]")
    err = fails(write_jsonl(tmp_path, "conv.jsonl", [{"conversations": "not a list"}]))
    assert_where(err, "conv.jsonl", 1, "conversations")


def test_empty_text(tmp_path):
    err = fails(write_jsonl(tmp_path, "t.jsonl", [{"text": "   "}]))
    assert_where(err, "t.jsonl", 1, "text")
    assert err.reason == "empty text"


def test_nothing_detectable_lists_fields_and_needs(tmp_path):
    err = fails(write_jsonl(tmp_path, "what.jsonl", [{"question": "q", "reply": "r"}]))
    msg = str(err)
    assert "what.jsonl:1" in msg and "'question', 'reply'" in msg
    assert "alpaca needs instruction + output" in msg and "sharegpt needs conversations" in msg and "columns" in msg


def test_mixed_formats_name_the_row_that_does_not_fit(tmp_path):
    p = write_jsonl(tmp_path, "mixed.jsonl", [{"instruction": "q", "output": "r"}, {"messages": [u("q"), a("r")]}])
    err = fails(p)
    assert_where(err, "mixed.jsonl", 2, "instruction")
    assert "looks like format messages" in str(err) and "detected from line 1" in str(err)
    records, report = load_records(str(p), on_error="skip")
    assert len(records) == 1 and report.reasons == {"format mismatch": 1}


def test_mapped_column_missing_says_so(tmp_path):
    p = write_jsonl(tmp_path, "map.jsonl", [{"question": "q", "response": "r"}])
    err = fails(p, fmt="alpaca", columns={"instruction": "question", "output": "answer"})
    assert_where(err, "map.jsonl", 1, "output")
    assert "column 'answer'" in str(err)


def test_bad_arguments():
    path = str(ASSETS / "fmt_text.jsonl")
    with pytest.raises(DataError, match="did you mean 'sharegpt'"):
        load_records(path, fmt="sharegtp")
    with pytest.raises(DataError, match="did you mean 'instruction'"):
        load_records(path, columns={"instrution": "q"})
    with pytest.raises(DataError, match="on_error"):
        load_records(path, on_error="ignore")
    with pytest.raises(DataError, match="unknown format"):
        to_record({"text": "x"}, "chat", "f.jsonl", 1)


# ---------------------------------------------------------------- skip mode


def test_skip_mode_counts_reasons_and_keeps_good_rows(tmp_path):
    rows = [
        {"messages": [u("q"), a("r")]},  # 1 ok
        '{"messages": [',  # 2 malformed json
        {"messages": [u("q"), {"role": "bot", "content": "r"}]},  # 3 bad roles
        {"messages": [u("q"), a("")]},  # 4 empty response
        {"mesages": [u("q"), a("r")]},  # 5 missing field
        {"messages": [u("q"), a("r"), u("dangling")]},  # 6 bad roles (ends on user)
        {"messages": [u("q2"), a("r2")]},  # 7 ok
    ]
    p = write_jsonl(tmp_path, "mixed_bad.jsonl", rows)
    records, report = load_records(str(p), on_error="skip")
    assert [r.line for r in records] == [1, 7]
    assert (report.total, report.kept, report.skipped) == (7, 2, 5)
    assert report.reasons == {"malformed json": 1, "bad roles": 2, "empty response": 1, "missing field": 1}
    assert [(e.line, e.field) for e in report.examples] == [
        (2, None), (3, "messages[1].role"), (4, "messages[1].content"), (5, "messages"), (6, "messages[2].role")
    ]
    assert "did you mean 'messages'" in report.examples[3].message
    assert report.summary().startswith("2 of 7 rows kept; skipped 5")


def test_skip_mode_detects_from_the_first_usable_row(tmp_path):
    p = write_jsonl(tmp_path, "late.jsonl", ["{oops", {"text": "a"}, {"text": "b"}])
    records, report = load_records(str(p), on_error="skip")
    assert [r.text for r in records] == ["a", "b"] and report.reasons == {"malformed json": 1}


def test_skip_mode_with_no_usable_row_still_stops(tmp_path):
    p = write_jsonl(tmp_path, "allbad.jsonl", [{"text": ""}, {"text": " "}])
    with pytest.raises(DataError, match=r"no usable rows \(2 skipped\).*allbad.jsonl:1"):
        load_records(str(p), on_error="skip")


def test_given_report_accumulates(tmp_path):
    report = SkipReport()
    load_records(str(ASSETS / "fmt_text.jsonl"), report=report)
    _, same = load_records(str(ASSETS / "fmt_messages.jsonl"), report=report)
    assert same is report and (report.total, report.kept) == (4, 4)
