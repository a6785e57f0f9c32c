"""Resumable output: done ids survive a restart, a cut-off last line is dropped, secondary sinks never duplicate."""

from __future__ import annotations

import json

import pytest

from tunesmith.data.synth.resumable import ResumableOutput, stable_id
from tunesmith.errors import DataError


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_resume_skips_done_and_repairs_a_cut_line(tmp_path):
    sinks = {"rows": tmp_path / "o.jsonl", "rejected": tmp_path / "o.rejected.jsonl"}
    with ResumableOutput(sinks) as out:
        out.write("rows", {"id": "a", "x": 1})
        out.write("rejected", {"id": "b", "reason": "tie"})
        out.write("rows", {"id": "c-0", "item": "c"})
        out.write("rows", {"id": "a", "x": 2})  # same id again: ignored
    with sinks["rows"].open("a") as f:
        f.write('{"id": "d", "x"')  # killed mid-write
    again = ResumableOutput(sinks)
    assert again.done == {"a", "b", "c"} and again.resumed == 3 and again.repaired == [str(sinks["rows"])]
    again.write("rows", {"id": "d"})
    again.close()
    assert [r["id"] for r in _lines(sinks["rows"])] == ["a", "c-0", "d"]


def test_secondary_sink_does_not_mark_done_and_is_not_duplicated(tmp_path):
    sinks = {"rows": tmp_path / "o.jsonl", "pairs": tmp_path / "p.jsonl"}
    with ResumableOutput(sinks, secondary=["pairs"]) as out:
        out.write("pairs", {"id": "a"})  # killed before the terminal row was written
    out = ResumableOutput(sinks, secondary=["pairs"])
    assert not out.is_done("a")
    out.write("pairs", {"id": "a"})
    out.write("rows", {"id": "a"})
    out.close()
    assert len(_lines(sinks["pairs"])) == 1 and ResumableOutput(sinks, secondary=["pairs"]).is_done("a")


def test_foreign_or_corrupt_output_is_refused(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"instruction": "x"}\n')
    with pytest.raises(DataError, match="o.jsonl:1: field 'id'"):
        ResumableOutput({"rows": path})
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match="o.jsonl:2"):
        ResumableOutput({"rows": path})


def test_stable_id():
    assert stable_id("p", {"b": 1, "a": 2}) == stable_id("p", {"a": 2, "b": 1}) != stable_id("q", {"a": 2, "b": 1})
    assert stable_id("p", {"prompt": "hi"}) == "p-" + __import__("hashlib").sha1(b'{"prompt": "hi"}').hexdigest()[:12]
