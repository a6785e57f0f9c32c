"""Tokenisation cache for alignment data: preference pairs (DPO/RM), unpaired rows (KTO) and RL prompts
(GRPO/PPO) come back from disk identical to tokenising (skip report included), a second load tokenises
nothing, any key change misses, and a damaged entry is rebuilt with a warning."""

from __future__ import annotations

import copy
import json

import pytest

from tunesmith.config.schema import DataConfig, DataSource, RunConfig
from tunesmith.data.cache import TokenCacheWarning
from tunesmith.data.prompts import load_prompt_sets
from tunesmith.data.templates import resolve_template
from tunesmith.errors import SkipReport
from tunesmith.training.pairwise import load_preference_sets
from tunesmith.training.run import prepare_data

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Five.", "margin": 0.3},
    {"prompt": "a", "chosen": "same", "rejected": "same"},  # skipped: chosen == rejected
    {"prompt": "word " * 80, "chosen": "x", "rejected": "y"},  # skipped: too long (overlong=drop)
    {"prompt": "Name a colour", "responses": ["Red.", "Blue maybe.", "no"]},
    {"prompt": "b", "chosen": "x"},  # skipped: missing field (on_error=skip)
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hey."}],
     "rejected": [{"role": "assistant", "content": "Bye."}]},
]
UNPAIRED = [
    {"prompt": "2+2?", "completion": "4", "label": True},
    {"prompt": "2+2?", "completion": "5", "label": False},
    {"prompt": "word " * 80, "completion": "x", "label": True},  # too long
    {"prompt": "3+3?", "completion": "6", "label": "maybe"},  # bad label
    {"prompt": "Capital of France?", "completion": "Paris", "label": True},
]
PROMPTS = [
    {"prompt": "What is 2+2?", "target": "4"},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ref answer"}], "meta": {"k": [1, 2.5]}},
    {"prompt": "word " * 80},  # prompt too long
    {"nothing": 1},  # bad prompt row
    {"prompt": "Say hi", "target": None},
]


@pytest.fixture
def tok(tokenizer):
    tok = copy.deepcopy(tokenizer)
    resolve_template(tok, "auto")
    return tok


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cfg(path, folder, fmt: str = "auto", new_tokens: int = 16, model: str | None = None, **data) -> RunConfig:
    data = {"max_length": 64, "overlong": "drop", "on_error": "skip", "cache_dir": str(folder), **data}
    return RunConfig.model_validate({"data": DataConfig(train=[DataSource(path=str(path), format=fmt)], **data).model_dump(),
                                     "rl": {"max_new_tokens": new_tokens}, "model": {"name_or_path": model or "smollm2-135m-instruct"}})


def entries(folder):
    return sorted(p.name for p in folder.glob("*.npz"))


def report_of(r: SkipReport):
    return r.total, r.kept, r.reasons, r.examples, r.summary()


def load(cfg, tok, kind):
    report = SkipReport()
    if kind == "rollout":
        return load_prompt_sets(cfg, tok, report), report
    return load_preference_sets(cfg, tok, kind, report), report


def forbid_tokenising(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr("tunesmith.data.preference.load_preference_examples", boom)
    monkeypatch.setattr("tunesmith.data.prompts.load_prompts", boom)


@pytest.mark.parametrize("kind,rows,reasons", [
    ("pairwise", PAIRS, {"chosen == rejected": 1, "too long": 1, "missing field": 1}),
    ("unpaired", UNPAIRED, {"too long": 1, "wrong type": 1}),
    ("rollout", PROMPTS, {"prompt too long": 1, "bad prompt row": 1}),
])
def test_hit_is_identical_to_tokenising_and_tokenises_nothing(tok, tmp_path, monkeypatch, kind, rows, reasons):
    data, folder = write(tmp_path / "d.jsonl", rows), tmp_path / "cache"
    (plain, _), plain_report = load(run_cfg(data, folder, cache=False), tok, kind)
    assert not folder.exists()  # data.cache off: nothing written
    cfg = run_cfg(data, folder)
    (built, _), built_report = load(cfg, tok, kind)
    assert len(entries(folder)) == 1
    forbid_tokenising(monkeypatch)
    (cached, evals), cached_report = load(cfg, tok, kind)
    assert cached == built == plain and evals == []  # every token list, prompt length, margin, label, row equal
    assert all(type(t) is int for item in cached for t in _ids(item))
    assert plain_report.reasons == reasons
    assert report_of(cached_report) == report_of(built_report) == report_of(plain_report)
    assert [p.line for p in cached_report.examples] == [p.line for p in plain_report.examples]


def _ids(item) -> list[int]:
    if hasattr(item, "chosen"):
        return item.chosen.input_ids + item.rejected.labels
    return item.example.input_ids + item.example.labels if hasattr(item, "example") else item.ids


def test_pairs_keep_prompt_len_and_margin_and_eval_split(tok, tmp_path, monkeypatch):
    data, folder = write(tmp_path / "d.jsonl", PAIRS), tmp_path / "cache"
    cfg = run_cfg(data, folder, eval_fraction=0.3)
    (train, evals), report = load(cfg, tok, "pairwise")
    forbid_tokenising(monkeypatch)
    (train2, evals2), report2 = load(cfg, tok, "pairwise")
    assert (train2, evals2) == (train, evals) and len(evals) == 2
    assert sorted(p.margin for p in train + evals) == [0.0] * 4 + [0.3]
    assert all(p.chosen.input_ids[: p.prompt_len] == p.rejected.input_ids[: p.prompt_len] for p in train2 + evals2)
    assert report_of(report2) == report_of(report)


def test_file_max_length_template_and_kind_change_the_key(tok, tmp_path):
    data, folder = write(tmp_path / "d.jsonl", PAIRS), tmp_path / "cache"
    base = run_cfg(data, folder)
    (first, _), _ = load(base, tok, "pairwise")
    load(run_cfg(data, folder, max_length=48), tok, "pairwise")
    alpaca = copy.deepcopy(tok)
    resolve_template(alpaca, "alpaca")
    (other, _), _ = load(run_cfg(data, folder, template="alpaca"), alpaca, "pairwise")
    assert other != first and len(entries(folder)) == 3
    load(run_cfg(data, folder, train_on="everything"), tok, "pairwise")  # not used by pairs: same entry
    assert len(entries(folder)) == 3
    write(data, PAIRS[:4])  # same path, new content
    (changed, _), report = load(base, tok, "pairwise")
    assert report.total == 4 and len(changed) == len(first) - 1 and len(entries(folder)) == 4
    both = write(tmp_path / "both.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "y", "completion": "c", "label": True}])
    load(run_cfg(both, folder), tok, "pairwise")
    load(run_cfg(both, folder, fmt="unpaired"), tok, "unpaired")
    assert len(entries(folder)) == 6  # pairs and KTO rows of one file never share an entry
    prompts = write(tmp_path / "prompts.jsonl", PROMPTS)
    (p1, _), _ = load(run_cfg(prompts, folder, max_length=200), tok, "rollout")
    (p2, _), r2 = load(run_cfg(prompts, folder, max_length=200, new_tokens=150), tok, "rollout")
    assert len(entries(folder)) == 8  # the prompt budget (max_length - rl.max_new_tokens) is part of the key
    assert len(p2) == len(p1) - 1 and r2.reasons["prompt too long"] == 1


@pytest.mark.parametrize("kind,rows", [("pairwise", PAIRS), ("unpaired", UNPAIRED), ("rollout", PROMPTS)])
def test_corrupt_entry_is_rebuilt_with_a_warning(tok, tmp_path, kind, rows):
    data, folder = write(tmp_path / "d.jsonl", rows), tmp_path / "cache"
    cfg = run_cfg(data, folder)
    (built, _), report = load(cfg, tok, kind)
    (entry,) = folder.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(TokenCacheWarning, match="unreadable"):
        (rebuilt, _), again = load(cfg, tok, kind)
    assert rebuilt == built and report_of(again) == report_of(report)
    (third, _), _ = load(cfg, tok, kind)  # the rebuilt entry is good again
    assert third == built


def test_entry_of_another_kind_under_the_same_name_is_rebuilt(tok, tmp_path):
    data, folder = write(tmp_path / "d.jsonl", UNPAIRED), tmp_path / "cache"
    cfg = run_cfg(data, folder)
    (built, _), _ = load(cfg, tok, "unpaired")
    (entry,) = folder.glob("*.npz")
    pairs_dir = tmp_path / "pairs"
    load(run_cfg(write(tmp_path / "p.jsonl", PAIRS), pairs_dir), tok, "pairwise")
    (pairs_entry,) = pairs_dir.glob("*.npz")
    entry.write_bytes(pairs_entry.read_bytes())  # well-formed npz, wrong items
    with pytest.warns(TokenCacheWarning, match="unreadable"):
        (rebuilt, _), _ = load(cfg, tok, "unpaired")
    assert rebuilt == built


def test_second_dpo_run_reads_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    data, folder = write(tmp_path / "d.jsonl", PAIRS), tmp_path / "cache"
    cfg = run_cfg(data, folder, model=str(tiny_model_dir))
    first = prepare_data(cfg, "pairwise")
    forbid_tokenising(monkeypatch)
    second = prepare_data(cfg, "pairwise")
    assert second.train == first.train and report_of(second.report) == report_of(first.report)


def test_prompt_rows_json_cannot_store_are_loaded_uncached_with_a_warning(tok, tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    data, folder = tmp_path / "p.parquet", tmp_path / "cache"
    pq.write_table(pa.table({"prompt": ["Hi", "2+2?"], "when": [datetime.datetime(2024, 1, 1)] * 2}), data)
    cfg = run_cfg(data, folder)
    with pytest.warns(TokenCacheWarning, match="JSON cannot store exactly"):
        (items, _), _ = load(cfg, tok, "rollout")
    assert entries(folder) == [] and items[0].row["when"] == datetime.datetime(2024, 1, 1)
    (plain, _), _ = load(run_cfg(data, folder, cache=False), tok, "rollout")
    assert items == plain
