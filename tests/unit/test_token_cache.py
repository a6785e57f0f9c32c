"""Tokenisation cache: a hit returns exactly what tokenising returns (report included), any key change
misses, and a damaged entry is rebuilt with a warning."""

from __future__ import annotations

import copy
import json

import pytest

from tunesmith.config.schema import DataConfig, DataSource
from tunesmith.data import cache as token_cache
from tunesmith.data.cache import TokenCacheWarning, cache_key
from tunesmith.data.dataset import build_examples

ROWS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    {"messages": [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]


@pytest.fixture
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(path, folder, **kw) -> DataConfig:
    return DataConfig(train=[DataSource(path=str(path))], cache_dir=str(folder), **kw)


def entries(folder):
    return sorted(p.name for p in folder.glob("*.npz"))


def test_hit_returns_identical_examples_and_report(tok, tmp_path, monkeypatch):
    data, folder = write(tmp_path / "d.jsonl", ROWS), tmp_path / "cache"
    c = cfg(data, folder, max_length=40, overlong="drop")
    built, report = build_examples(c.train, tok, c)
    assert len(entries(folder)) == 1 and [e.line for e in built] == [1, 3]
    calls = []
    monkeypatch.setattr("tunesmith.data.dataset._render_source", lambda *a: calls.append(a) or [])
    cached, again = build_examples(c.train, tok, c)
    assert calls == []  # served from disk: nothing re-tokenised
    assert cached == built and all(type(t) is int for e in cached for t in e.input_ids + e.labels)
    assert (again.total, again.kept, again.reasons, again.examples, again.notes) == (
        3, 2, {"too long": 1}, report.examples, report.notes)
    assert again.examples[0].line == 2 and "max_length=40" in again.examples[0].message
    assert again.summary() == report.summary() == "2 of 3 rows kept; skipped 1: 1 too long"


def test_truncation_notes_survive_the_cache(tok, tmp_path):
    data, folder = write(tmp_path / "d.jsonl", ROWS), tmp_path / "cache"
    c = cfg(data, folder, max_length=40, train_on="everything")
    first, r1 = build_examples(c.train, tok, c)
    second, r2 = build_examples(c.train, tok, c)
    assert first == second and r1.notes == r2.notes == {"truncated to max_length=40": 1}
    assert [e.truncated for e in second] == [False, True, False]


def test_any_key_change_misses(tok, tmp_path):
    data, folder = write(tmp_path / "d.jsonl", ROWS), tmp_path / "cache"
    base = cfg(data, folder)
    resolved = copy.deepcopy(tok)
    build_examples(base.train, resolved, base)
    key = cache_key(base.train, resolved, base)
    changed = [cfg(data, folder, max_length=512), cfg(data, folder, train_on="everything"),
               cfg(data, folder, template="alpaca"), cfg(data, folder, system_prompt="Be brief."),
               cfg(data, folder, overlong="drop")]
    for c in changed:
        build_examples(c.train, tok, c)
    assert len(entries(folder)) == 1 + len(changed)
    write(data, ROWS[:2])  # same path, new content
    examples, report = build_examples(base.train, tok, base)
    assert report.total == 2 and len(examples) == 2 and len(entries(folder)) == 2 + len(changed)
    other_tok = copy.deepcopy(tok)
    other_tok.add_tokens(["<extra_tok>"])  # a different vocab is a different key
    other_tok.chat_template = resolved.chat_template
    assert cache_key(base.train, other_tok, base) != key


def test_corrupted_entry_is_rebuilt_with_a_warning(tok, tmp_path):
    data, folder = write(tmp_path / "d.jsonl", ROWS), tmp_path / "cache"
    c = cfg(data, folder)
    built, _ = build_examples(c.train, tok, c)
    (entry,) = folder.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated file
    with pytest.warns(TokenCacheWarning, match="unreadable"):
        rebuilt, report = build_examples(c.train, tok, c)
    assert rebuilt == built and report.kept == 3
    again, _ = build_examples(c.train, tok, c)  # the rebuilt entry is good again
    assert again == built


def test_cache_off_writes_nothing_and_old_entries_are_pruned(tok, tmp_path, monkeypatch):
    data, folder = write(tmp_path / "d.jsonl", ROWS), tmp_path / "cache"
    c = cfg(data, folder, cache=False)
    build_examples(c.train, tok, c)
    assert not folder.exists()
    monkeypatch.setattr(token_cache, "MAX_ENTRIES", 2)
    for n in (100, 200, 300):
        c = cfg(data, folder, max_length=n)
        build_examples(c.train, tok, c)
    assert len(entries(folder)) == 2


def test_missing_file_still_gives_the_usual_error(tok, tmp_path):
    from tunesmith.errors import TunesmithError

    c = cfg(tmp_path / "nope.jsonl", tmp_path / "cache")
    with pytest.raises(TunesmithError, match="nope.jsonl"):
        build_examples(c.train, tok, c)
