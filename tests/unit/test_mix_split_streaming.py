"""mix and split stream: same bytes as the former hold-everything-in-memory code, and peak memory that
stays far below the file's size (measured with tracemalloc, which sees every Python allocation)."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from tunesmith.data.clean.decontaminate import Contamination
from tunesmith.data.clean.fields import iter_items
from tunesmith.data.mixing import balance, mix_files, mixing_probabilities, quotas, take
from tunesmith.data.readers import read_rows
from tunesmith.data.splitting import deal, near_dup_groups, split_file
from tunesmith.errors import SkipReport


def old_mix(sources, out, size=None, alpha=1.0, weights=None, seed=0, balance_field=None, balance_mode="down",
            source_field=None):
    """The previous in-memory mix_files (rows read into lists), kept here as the reference."""
    rng = random.Random(seed)
    data = [[row for _, row in read_rows(s, SkipReport(), "skip")] for s in sources]
    probs = mixing_probabilities([len(d) for d in data], alpha, weights)
    counts = quotas(probs, sum(map(len, data)) if size is None else size)
    mixed = []
    for src, rows, k in zip(sources, data, counts):
        picked = take(rows, k, rng)
        mixed += [{**r, source_field: str(src)} for r in picked] if source_field else picked
    if balance_field:
        mixed, _ = balance(mixed, balance_field, balance_mode, rng)
    rng.shuffle(mixed)
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mixed), encoding="utf-8")


def old_split(path, out, fractions, seed, group, eval_files):
    """The previous in-memory split_file (all Items in a list), kept here as the reference."""
    items = list(iter_items(path, SkipReport()))
    contaminated = []
    if eval_files:
        index, clean = Contamination(eval_files), []
        for item in items:
            reason = index.match(item)
            (contaminated.append((item, reason)) if reason else clean.append(item))
        items = clean
    groups = near_dup_groups(items) if group else [[i] for i in range(len(items))]
    out.mkdir()
    for name, idx in deal(groups, fractions, seed).items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(items[i].row, ensure_ascii=False) + "\n" for i in sorted(idx)))
    if eval_files:
        (out / "contaminated.jsonl").write_text("".join(
            json.dumps({"line": it.line, "reason": r, "row": it.row}, ensure_ascii=False) + "\n" for it, r in contaminated))


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path):
    rng = random.Random(3)
    a = _write(tmp_path / "a.jsonl", [{"text": f"a {i} é", "cat": rng.choice(["x", "y", "z"])} for i in range(230)])
    b = _write(tmp_path / "b.jsonl", [{"text": f"b {i}", "cat": "x" if i % 3 else None} for i in range(40)])
    (tmp_path / "c.jsonl").write_text('{"text": "c 0", "cat": "y"}\nnot json\n{"text": "c 1"}\n')
    return [a, b, tmp_path / "c.jsonl"]


@pytest.mark.parametrize("kwargs", [
    {}, {"size": 1000, "alpha": 0.5, "seed": 7}, {"size": 50, "weights": [1, 2, 3], "seed": 1, "source_field": "src"},
    {"seed": 4, "balance_field": "cat", "balance_mode": "down"},
    {"size": 600, "seed": 5, "balance_field": "src", "balance_mode": "up", "source_field": "src"},
])
def test_streaming_mix_equals_the_in_memory_mix(tmp_path, sources, kwargs):
    mix_files(sources, tmp_path / "new.jsonl", manifest=False, **kwargs)
    old_mix(sources, tmp_path / "old.jsonl", **kwargs)
    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "old.jsonl").read_bytes()
    assert not list(tmp_path.glob(".mix-*"))  # the spill file is gone


@pytest.fixture
def split_data(tmp_path):
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(500)]
    rows = []
    for i in range(150):
        words = [rng.choice(vocab) for _ in range(30)]
        rows.append({"instruction": f"task {i}", "output": " ".join(words)})
        if i % 7 == 0:
            rows.append({"instruction": f"task {i} again", "output": " ".join(words[:-1] + ["changed"])})
    path = _write(tmp_path / "d.jsonl", rows)
    with path.open("a") as f:
        f.write("{broken\n")
    evals = _write(tmp_path / "eval.jsonl", [{"prompt": rows[i]["output"], "completion": "x"} for i in (3, 40, 41)])
    return path, evals


@pytest.mark.parametrize("group,use_eval,seed", [(True, True, 0), (True, False, 3), (False, True, 1)])
def test_streaming_split_equals_the_in_memory_split(tmp_path, split_data, group, use_eval, seed):
    path, evals = split_data
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    eval_files = [evals] if use_eval else None
    report = split_file(path, tmp_path / "new", fractions, seed, group, eval_files=eval_files)
    old_split(path, tmp_path / "old", fractions, seed, group, eval_files)
    names = ["train", "val", "test"] + (["contaminated"] if use_eval else [])
    for name in names:
        assert (tmp_path / "new" / f"{name}.jsonl").read_bytes() == (tmp_path / "old" / f"{name}.jsonl").read_bytes(), name
    assert report["rows_skipped"] == 1 and sum(report["rows"].values()) == 150 + 22 - report["decontamination"]["removed"]
    assert report["decontamination"]["removed"] == (3 if use_eval else 0)


def _file(path: Path, rows: int, meta: int) -> Path:
    """Rows of distinct 40-word answers plus a `meta` field of `meta` characters (carried, never hashed)."""
    rng = random.Random(1)
    vocab = [f"v{i}" for i in range(5000)]
    with path.open("w") as f:
        for i in range(rows):
            answer = " ".join(rng.choice(vocab) for _ in range(40))
            f.write(json.dumps({"instruction": f"row {i}", "output": answer, "cat": i % 3, "meta": "m" * meta}) + "\n")
    return path


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_mix_and_split_memory_does_not_grow_with_the_rows_size(tmp_path):
    """Same row count, rows 200x longer: the in-memory mix's peak grows past the file's size; the streaming
    mix's and split's peaks stay put (they hold one row at a time plus per-row bookkeeping)."""
    small, big = _file(tmp_path / "small.jsonl", 400, 0), _file(tmp_path / "big.jsonl", 400, 25_000)
    size = big.stat().st_size
    assert size > 10_000_000

    def mix(src):
        return lambda: mix_files([src, src], tmp_path / "m.jsonl", size=3000, seed=1, balance_field="cat",
                                 balance_mode="up", manifest=False)

    def split(src):
        return lambda: split_file(src, tmp_path / "s", seed=0, group=True)

    assert _peak(lambda: old_mix([big], tmp_path / "old.jsonl", size=10)) > size
    for name, run in (("mix", mix), ("split", split)):
        grown = _peak(run(big)) - _peak(run(small))
        assert grown < size / 50, (name, grown, size)
    assert sum(1 for _ in (tmp_path / "m.jsonl").open()) == 3015  # "up": every category repeated to the largest (1005)
    assert sum(sum(1 for _ in (tmp_path / "s" / f"{n}.jsonl").open()) for n in ("train", "val", "test")) == 400
