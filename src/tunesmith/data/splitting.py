"""`split`: train / validation / test files, with near-duplicate grouping and decontamination.

1. Decontaminate (optional): rows overlapping the evaluation files (13-gram overlap, optional MinHash;
   see clean/decontaminate.py) go to contaminated.jsonl with the reason, not into any split.
2. Group (optional, on by default): rows whose MinHash Jaccard similarity reaches the threshold are
   joined (union-find over LSH matches), so near-duplicates always land in the same split.
3. Groups are shuffled with the seed and dealt to the split furthest below its target size.

The rows are held in memory (a split needs all of them before it can deal them out).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith.data.clean.decontaminate import Contamination
from tunesmith.data.clean.dedup import NearDupIndex
from tunesmith.data.clean.fields import Item, iter_items
from tunesmith.errors import SkipReport, TunesmithError

DEFAULT_FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_dup_groups(items: list[Item], threshold: float = 0.8, num_perm: int = 128, ngram: int = 5) -> list[list[int]]:
    """Indices of `items` grouped so that every pair of near-duplicates shares a group (union-find)."""
    index = NearDupIndex(threshold, num_perm, ngram)
    parent = list(range(len(items)))
    for i, item in enumerate(items):
        m = index.hasher(item.all_text())
        if m is None:
            continue
        for j, _ in index.matches(m):
            a, b = _find(parent, i), _find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
        index.add(m, i)
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(_find(parent, i), []).append(i)
    return list(groups.values())


def deal(groups: list[list[int]], fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Shuffle groups and give each to the split furthest below its target share."""
    total = sum(len(g) for g in groups)
    order = sorted(groups, key=lambda g: g[0])
    random.Random(seed).shuffle(order)
    out: dict[str, list[int]] = {name: [] for name in fractions}
    live = [n for n in fractions if fractions[n] > 0]
    for g in order:  # the split with the smallest filled share of its target, ties to the larger target
        name = min(live, key=lambda n: ((len(out[n]) + len(g)) / (fractions[n] * total), -fractions[n]))
        out[name] += g
    return out


def _check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    if not fractions or any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise TunesmithError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    return fractions


def split_file(path: str | Path, out_dir: str | Path, fractions: dict[str, float] | None = None, seed: int = 0,
               group: bool = True, threshold: float = 0.8, num_perm: int = 128,
               eval_files: list[str | Path] | None = None, ngram: int = 13, min_words: int = 8,
               minhash_threshold: float | None = None) -> dict:
    """Split `path` into OUT_DIR/{train,val,test}.jsonl; returns (and writes split_report.json) the report."""
    fractions = _check_fractions(dict(fractions or DEFAULT_FRACTIONS))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = SkipReport()
    items = list(iter_items(path, report))
    contaminated: list[tuple[Item, str]] = []
    if eval_files:
        index = Contamination(eval_files, ngram, min_words, minhash_threshold, num_perm)
        clean = []
        for item in items:
            reason = index.match(item)
            (contaminated.append((item, reason)) if reason else clean.append(item))
        items = clean
    groups = near_dup_groups(items, threshold, num_perm) if group else [[i] for i in range(len(items))]
    dealt = deal(groups, fractions, seed)
    files = {}
    for name, idx in dealt.items():
        files[name] = str(out / f"{name}.jsonl")
        with open(files[name], "w", encoding="utf-8") as f:
            for i in sorted(idx):
                f.write(json.dumps(items[i].row, ensure_ascii=False) + "\n")
    if eval_files:
        files["contaminated"] = str(out / "contaminated.jsonl")
        with open(files["contaminated"], "w", encoding="utf-8") as f:
            for item, reason in contaminated:
                f.write(json.dumps({"line": item.line, "reason": reason, "row": item.row}, ensure_ascii=False) + "\n")
    multi = [g for g in groups if len(g) > 1]
    result = {
        "input": str(path), "files": files, "seed": seed, "fractions": fractions,
        "rows": {name: len(idx) for name, idx in dealt.items()},
        "rows_skipped": report.skipped, "skip_reasons": report.reasons,
        "grouping": {"on": group, "threshold": threshold, "groups_with_near_duplicates": len(multi),
                     "rows_in_those_groups": sum(len(g) for g in multi), "largest_group": max(map(len, groups), default=0)},
        "decontamination": {"eval_files": [str(e) for e in eval_files or []], "ngram": ngram,
                            "minhash_threshold": minhash_threshold, "removed": len(contaminated),
                            "examples": [{"line": it.line, "reason": r} for it, r in contaminated[:20]]},
    }
    (out / "split_report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
