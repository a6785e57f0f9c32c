"""read_rows: every supported file type, and a clear DataError (file, line, field) for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data.readers import RowError, read_rows
from tunesmith.errors import DataError, SkipReport

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def rows_of(path, on_error="stop", report=None):
    report = report if report is not None else SkipReport()
    return list(read_rows(path, report, on_error)), report


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    return p


# ---------------------------------------------------------------- good files


def test_jsonl_numbers_are_file_lines_and_blank_lines_are_not_rows():
    rows, report = rows_of(ASSETS / "fmt_alpaca.jsonl")
    assert [n for n, _ in rows] == [1, 2, 4]  # line 3 is blank
    assert rows[1][1] == {"instruction": "Translate to German.", "input": "Good morning", "output": "Guten Morgen"}
    assert report.total == 3 and report.skipped == 0


def test_jsonl_with_bom_crlf_and_whitespace_lines(tmp_path):
    p = write(tmp_path, "d.jsonl", b'\xef\xbb\xbf{"text": "a"}\r\n   \r\n{"text": "b"}')
    rows, report = rows_of(p)
    assert rows == [(1, {"text": "a"}), (3, {"text": "b"})]
    assert report.total == 2


def test_json_list_and_single_key_object(tmp_path):
    rows, _ = rows_of(ASSETS / "fmt_alpaca.json")
    assert [n for n, _ in rows] == [1, 2]
    assert rows[0][1]["output"] == "Paris."
    p = write(tmp_path, "l.json", json.dumps([{"text": "x"}, {"text": "y"}]))
    assert rows_of(p)[0] == [(1, {"text": "x"}), (2, {"text": "y"})]
    p = write(tmp_path, "v.json", json.dumps({"version": 2, "rows": [{"text": "z"}]}))
    assert rows_of(p)[0] == [(1, {"text": "z"})]


def test_parquet_streams_nested_rows(tmp_path):
    p = tmp_path / "m.parquet"
    table = pa.Table.from_pylist(
        [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], "id": i} for i in range(2500)]
    )
    pq.write_table(table, p, row_group_size=1000)
    rows, report = rows_of(p)
    assert len(rows) == 2500 and report.total == 2500
    assert rows[0] == (1, {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}], "id": 0})
    assert rows[-1][0] == 2500 and rows[-1][1]["id"] == 2499


def test_parquet_written_by_datasets(tmp_path):
    from datasets import Dataset

    p = tmp_path / "d.parquet"
    Dataset.from_list([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]).to_parquet(str(p))
    assert rows_of(p)[0] == [(1, {"instruction": "a", "output": "b"}), (2, {"instruction": "c", "output": "d"})]


def test_csv_keeps_every_cell_as_text_and_multiline_values():
    rows, report = rows_of(ASSETS / "fmt_qa.csv")
    assert rows == [
        (1, {"question": "Name the capital of France.", "context": "", "answer": "Paris.", "id": "1"}),
        (2, {"question": "Summarise, briefly.", "context": "Line one\nline two", "answer": "Short.", "id": "2"}),
    ]
    assert report.total == 2


def test_suffix_is_case_insensitive(tmp_path):
    p = write(tmp_path, "UP.JSONL", '{"text": "a"}\n')
    assert rows_of(p)[0] == [(1, {"text": "a"})]


# ---------------------------------------------------------------- file-level errors


def test_missing_file_suggests_a_close_name(tmp_path):
    write(tmp_path, "train.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError, match="file not found") as e:
        read_rows(tmp_path / "trian.jsonl", SkipReport())  # raises on the call, before iterating
    assert "trian.jsonl" in str(e.value) and "train.jsonl" in str(e.value)


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="folder"):
        read_rows(tmp_path, SkipReport())


def test_unknown_extension_lists_supported_ones(tmp_path):
    p = write(tmp_path, "d.txt", "hello\n")
    with pytest.raises(DataError) as e:
        read_rows(p, SkipReport())
    msg = str(e.value)
    assert "d.txt" in msg and "'.txt'" in msg
    for suffix in (".jsonl", ".json", ".parquet", ".csv"):
        assert suffix in msg


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.parquet"])
def test_empty_file(tmp_path, name):
    p = write(tmp_path, name, b"")
    with pytest.raises(DataError, match="file is empty") as e:
        read_rows(p, SkipReport())
    assert e.value.problem.file.endswith(name)


def test_jsonl_with_only_blank_lines_is_empty(tmp_path):
    p = write(tmp_path, "b.jsonl", "\n  \n\n")
    with pytest.raises(DataError, match="file is empty"):
        rows_of(p)


def test_bad_on_error_value(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError, match="on_error"):
        read_rows(p, SkipReport(), on_error="ignore")


def test_json_errors(tmp_path):
    p = write(tmp_path, "bad.json", '[\n  {"text": "a"},\n  {"text": "b",}\n]')
    with pytest.raises(DataError) as e:
        rows_of(p)
    assert e.value.problem.line == 3 and "malformed JSON" in str(e.value) and "bad.json:3" in str(e.value)
    p = write(tmp_path, "lines.json", '{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="name it .jsonl"):
        rows_of(p)
    with pytest.raises(DataError, match="one JSON object"):
        rows_of(write(tmp_path, "obj.json", '{"text": "a"}'))
    with pytest.raises(DataError, match="several lists"):
        rows_of(write(tmp_path, "two.json", '{"a": [], "b": []}'))
    with pytest.raises(DataError, match="empty list"):
        rows_of(write(tmp_path, "none.json", "[]"))
    with pytest.raises(DataError, match="file is empty"):
        rows_of(write(tmp_path, "ws.json", "  \n"))


def test_json_non_utf8_names_line_and_offset(tmp_path):
    p = write(tmp_path, "latin.json", b'[\n {"text": "caf\xe9"}\n]')
    with pytest.raises(DataError) as e:
        rows_of(p)
    msg = str(e.value)
    assert "latin.json:2" in msg and "byte offset 16" in msg and "0xe9" in msg and "UTF-8" in msg


def test_parquet_that_is_not_parquet(tmp_path):
    p = write(tmp_path, "fake.parquet", b"this is not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_rows(p, SkipReport())


def test_parquet_and_csv_without_rows(tmp_path):
    p = tmp_path / "z.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), p)
    with pytest.raises(DataError, match="no rows"):
        read_rows(p, SkipReport())
    with pytest.raises(DataError, match="header but no rows"):
        rows_of(write(tmp_path, "h.csv", "instruction,output\n"))


# ---------------------------------------------------------------- row-level errors: stop and skip

BAD_JSONL = (
    b'{"text": "ok one"}\n'
    b'{"text": "broken",\n'  # line 2: malformed
    b"\n"
    b'{"text": "caf\xe9"}\n'  # line 4: not UTF-8
    b'["a", "list"]\n'  # line 5: not an object
    b'{"text": "ok two"}\n'
)


def test_malformed_json_line_names_line_message_and_column(tmp_path):
    p = write(tmp_path, "bad.jsonl", BAD_JSONL)
    with pytest.raises(DataError) as e:
        rows_of(p)
    msg = str(e.value)
    assert e.value.problem.line == 2 and "bad.jsonl:2" in msg
    assert "malformed JSON" in msg and "Expecting property name enclosed in double quotes" in msg and "column 19" in msg


def test_non_utf8_line_names_line_and_byte_offset(tmp_path):
    p = write(tmp_path, "latin.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError) as e:
        rows_of(p)
    msg = str(e.value)
    assert "latin.jsonl:2" in msg and "not valid UTF-8" in msg and "0xe9" in msg
    assert "byte offset 28" in msg and "byte 14 of the line" in msg and "re-encode" in msg


def test_row_that_is_not_an_object(tmp_path):
    p = write(tmp_path, "arr.jsonl", '{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match="row is an array, expected a JSON object") as e:
        rows_of(p)
    assert e.value.problem.line == 2
    p = write(tmp_path, "arr.json", '[{"text": "a"}, "just text"]')
    with pytest.raises(DataError, match="row is a string") as e:
        rows_of(p)
    assert e.value.problem.line == 2


def test_multiline_json_in_a_jsonl_file_gets_a_hint(tmp_path):
    p = write(tmp_path, "pretty.jsonl", '[\n  {"text": "a"}\n]\n')
    with pytest.raises(DataError, match="name it .json"):
        rows_of(p)


def test_skip_mode_counts_every_bad_line_and_goes_on(tmp_path):
    p = write(tmp_path, "bad.jsonl", BAD_JSONL)
    rows, report = rows_of(p, on_error="skip")
    assert rows == [(1, {"text": "ok one"}), (6, {"text": "ok two"})]
    assert report.total == 5  # the blank line is not a row
    assert report.reasons == {"malformed json": 1, "not utf-8": 1, "not an object": 1}
    assert [ex.line for ex in report.examples] == [2, 4, 5]
    assert all(ex.file.endswith("bad.jsonl") for ex in report.examples)


def test_stop_mode_yields_good_rows_until_the_first_bad_one(tmp_path):
    p = write(tmp_path, "bad.jsonl", BAD_JSONL)
    seen = []
    with pytest.raises(RowError) as e:
        for number, row in read_rows(p, SkipReport()):
            seen.append(number)
    assert seen == [1] and e.value.reason == "malformed json"


def test_csv_ragged_and_non_utf8_rows(tmp_path):
    data = b'instruction,output\na,b\nonly one value\nc,caf\xe9\nd,e\n'
    p = write(tmp_path, "r.csv", data)
    with pytest.raises(DataError) as e:
        rows_of(p)
    assert e.value.problem.line == 2 and "1 values but the header has 2 columns" in str(e.value)
    rows, report = rows_of(p, on_error="skip")
    assert rows == [(1, {"instruction": "a", "output": "b"}), (4, {"instruction": "d", "output": "e"})]
    assert report.total == 4 and report.reasons == {"bad csv row": 1, "not utf-8": 1}
    utf = report.examples[1]
    assert (utf.line, utf.field) == (3, "output") and "byte offset 3 of the value" in utf.message


def test_report_is_shared_across_files(tmp_path):
    report = SkipReport()
    rows_of(ASSETS / "fmt_text.jsonl", report=report)
    rows_of(ASSETS / "fmt_messages.jsonl", report=report)
    assert report.total == 4
