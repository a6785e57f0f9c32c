"""build_examples over real files with the real tokenizer: drops are counted, never silent."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from tunesmith.cli.data import data_app
from tunesmith.config.schema import DataConfig, DataSource
from tunesmith.data.dataset import build_examples, dataset_stats, split_eval
from tunesmith.data.templates import EmptyMaskError, Example
from tunesmith.errors import SkipReport, TunesmithError

SHORT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
LONG = {"messages": [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"}]}


@pytest.fixture
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(path, **kw) -> DataConfig:
    return DataConfig(train=[DataSource(path=str(path))], **kw)


def test_build_examples_tokenises_every_row(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT, SHORT])
    c = cfg(path)
    examples, report = build_examples(c.train, tok, c)
    assert [e.line for e in examples] == [1, 2]
    assert examples[0].input_ids[-3:] == [31041, 2, 198]  # "yo", <|im_end|>, "\n"
    assert (report.total, report.kept, report.skipped) == (2, 2, 0)
    stats = dataset_stats(examples)
    assert stats == {"rows": 2, "tokens": 68, "trained_tokens": 4, "mean_length": 34.0, "max_length": 34, "truncated": 0}


def test_overlong_drop_is_counted_and_truncate_is_noted(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT, LONG, SHORT])
    c = cfg(path, max_length=40, overlong="drop")
    examples, report = build_examples(c.train, tok, c)
    assert [e.line for e in examples] == [1, 3]
    assert (report.total, report.kept, report.reasons) == (3, 2, {"too long": 1})
    assert report.examples[-1].line == 2 and "max_length=40" in report.examples[-1].message
    assert "skipped 1: 1 too long" in report.summary()
    c = cfg(path, max_length=40, overlong="truncate", on_error="skip")
    examples, report = build_examples(c.train, tok, c)
    # truncation cuts the whole answer of the long row: an empty mask, skipped and counted
    assert [e.line for e in examples] == [1, 3] and report.reasons == {"empty mask": 1}


def test_truncated_rows_are_kept_and_noted(tok, tmp_path):
    long_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok " * 40}]}
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT, long_answer])
    c = cfg(path, max_length=40)
    examples, report = build_examples(c.train, tok, c)
    assert [e.truncated for e in examples] == [False, True] and len(examples[1].input_ids) == 40
    assert report.kept == 2 and report.notes == {"truncated to max_length=40": 1}
    assert "1 truncated to max_length=40" in report.summary()
    assert dataset_stats(examples)["truncated"] == 1


def test_empty_mask_stops_by_default(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT, LONG])
    c = cfg(path, max_length=40)
    with pytest.raises(EmptyMaskError, match=r"d\.jsonl:2.*no trained tokens"):
        build_examples(c.train, tok, c)


def test_report_given_by_caller_is_filled(tok, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [SHORT])
    b = write_jsonl(tmp_path / "b.jsonl", [SHORT, LONG])
    c = DataConfig(train=[DataSource(path=str(a)), DataSource(path=str(b))], max_length=40, overlong="drop")
    mine = SkipReport(total=5, kept=5)
    examples, report = build_examples(c.train, tok, c, report=mine)
    assert report is mine and len(examples) == 2
    assert (mine.total, mine.kept, mine.reasons) == (8, 7, {"too long": 1})


def test_template_and_system_prompt_from_config(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT])
    c = cfg(path, template="alpaca", system_prompt="Be brief.")
    examples, _ = build_examples(c.train, tok, c)
    assert tok.decode(examples[0].input_ids) == "Be brief.\n\n### Instruction:\nhi\n\n### Response:\nyo<|im_end|>\n\n"


def make_examples(n: int) -> list[Example]:
    return [Example([i, i + 1], [i, i + 1], "f", i + 1, False) for i in range(n)]


def test_split_eval_is_deterministic_and_complete():
    examples = make_examples(50)
    train, held = split_eval(examples, 0.1, seed=7)
    assert len(train) == 45 and len(held) == 5
    assert sorted(e.line for e in train + held) == list(range(1, 51))
    assert [e.line for e in held] == [e.line for e in split_eval(examples, 0.1, seed=7)[1]]
    assert [e.line for e in held] != [e.line for e in split_eval(examples, 0.1, seed=8)[1]]
    assert [e.line for e in train] == sorted(e.line for e in train)  # original order kept
    assert split_eval(examples, 0.0, seed=7) == (examples, [])
    with pytest.raises(TunesmithError, match="no training rows"):
        split_eval(make_examples(1), 0.5, seed=0)


def test_cli_preview_shows_rows_and_summary(tmp_path, bundled_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT, {"messages": [{"role": "user", "content": "x"}]}, SHORT])
    result = CliRunner().invoke(data_app, ["preview", str(path), "--model", str(bundled_path), "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "d.jsonl:1" in result.output and "34 tokens, 2 trained" in result.output
    assert "d.jsonl:3" not in result.output  # -n 1
    assert "2 of 3 rows kept" in result.output


def test_cli_preview_errors_exit_2(tmp_path, bundled_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SHORT])
    runner = CliRunner()
    result = runner.invoke(data_app, ["preview", str(tmp_path / "missing.jsonl"), "--model", str(bundled_path)])
    assert result.exit_code == 2 and "file not found" in " ".join(result.output.split())  # rich wraps long tmp paths
    result = runner.invoke(data_app, ["preview", str(path), "--model", str(bundled_path), "--train-on", "answers"])
    assert result.exit_code == 2 and "train_on" in result.output
