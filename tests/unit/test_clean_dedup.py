"""Exact and near-duplicate removal on a planted set: precision and recall of the MinHash LSH stage."""

from __future__ import annotations

import json
import random

from tunesmith.data.clean.dedup import ExactDedupConfig, ExactDedupStage, shingles
from tunesmith.data.clean.fields import Item, slots_of
from tunesmith.data.clean.pipeline import clean_file


def _item(line: int, row: dict, fmt: str = "alpaca") -> Item:
    return Item(line, row, fmt, slots_of(row, fmt))


def _jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, 5), shingles(b, 5)
    return len(sa & sb) / len(sa | sb)


def _edit(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """One or two small edits: substitute, insert or delete a word."""
    w = list(words)
    for _ in range(rng.choice((1, 2))):
        i = rng.randrange(len(w))
        op = rng.choice(("sub", "ins", "del"))
        if op == "sub":
            w[i] = rng.choice(vocab)
        elif op == "ins":
            w.insert(i, rng.choice(vocab))
        else:
            del w[i]
    return w


def planted(tmp_path, seed: int = 0):
    """300 distinct rows, 100 exact copies, 200 near copies, 100 hard negatives (half shared)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    originals = [[rng.choice(vocab) for _ in range(rng.randint(100, 140))] for _ in range(300)]
    rows, dup = [], []  # dup[k]: row k is a planted copy
    for w in originals:
        rows.append(" ".join(w)), dup.append(False)
    for w in rng.sample(originals, 100):
        rows.append(" ".join(w)), dup.append(True)
    for w in rng.choices(originals, k=200):
        rows.append(" ".join(_edit(w, rng, vocab))), dup.append(True)
    for w in rng.sample(originals, 100):  # same first half, new second half: Jaccard ~0.3
        half = len(w) // 2
        rows.append(" ".join(w[:half] + [rng.choice(vocab) for _ in range(len(w) - half)])), dup.append(False)
    order = list(range(300)) + rng.sample(range(300, len(rows)), len(rows) - 300)  # originals first
    path = tmp_path / "planted.jsonl"
    with path.open("w") as f:
        for k in order:
            f.write(json.dumps({"instruction": "Summarise the text.", "input": rows[k][:40], "output": rows[k]}) + "\n")
    return path, [dup[k] for k in order]


def test_near_dup_precision_and_recall_at_least_095(tmp_path):
    path, is_dup = planted(tmp_path)
    stats = clean_file(path, tmp_path / "out.jsonl", {"stages": [{"near_dedup": {"threshold": 0.8}}]})
    removed = [json.loads(line)["line"] for line in (tmp_path / "out.removed.jsonl").read_text().splitlines()]
    flagged = set(removed)
    tp = sum(1 for line in flagged if is_dup[line - 1])
    precision, recall = tp / len(flagged), tp / sum(is_dup)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert stats["stages"][0]["removed"] == len(flagged) and stats["rows_out"] == 700 - len(flagged)


def test_planted_near_copies_are_really_near():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(3000)]
    base = [rng.choice(vocab) for _ in range(100)]
    sims = [_jaccard(" ".join(base), " ".join(_edit(base, rng, vocab))) for _ in range(50)]
    assert min(sims) >= 0.8 > _jaccard(" ".join(base), " ".join(base[:50] + vocab[:50]))


def test_exact_dedup_levels():
    a = {"instruction": "What is 2+2?", "output": "4"}
    b = {"instruction": "what is  2+2?", "output": "Four."}  # same instruction after normalisation
    c = {"instruction": "What is 2+2?", "output": "4", "system": "Be brief."}
    for level, removed in (("instruction", [2, 3]), ("pair", [3]), ("conversation", [])):
        stage = ExactDedupStage(ExactDedupConfig(level=level))
        verdicts = [stage(_item(i, dict(r))) for i, r in enumerate((a, b, c), 1)]
        assert [i for i, v in enumerate(verdicts, 1) if v is not None] == removed, level
    stage = ExactDedupStage(ExactDedupConfig(level="pair"))
    stage(_item(1, dict(a)))
    assert stage(_item(7, dict(c))).detail == "same pair as line 1"


def test_near_dedup_keeps_first_and_names_it(tmp_path):
    text = " ".join(f"word{i}" for i in range(60))
    rows = [{"text": text}, {"text": "something else entirely, with its own words and more of them"},
            {"text": text.replace("word59", "changed")}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clean_file(tmp_path / "t.jsonl", tmp_path / "o.jsonl", {"stages": ["near_dedup"]})
    kept = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    gone = [json.loads(x) for x in (tmp_path / "o.removed.jsonl").read_text().splitlines()]
    assert kept == rows[:2]
    assert gone[0]["line"] == 3 and gone[0]["stage"] == "near_dedup" and gone[0]["detail"].endswith("with line 1")
