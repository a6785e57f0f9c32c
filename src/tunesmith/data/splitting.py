"""`split`: train / validation / test files, with near-duplicate grouping and decontamination.

1. Decontaminate (optional): rows overlapping the evaluation files (13-gram overlap, optional MinHash;
   see clean/decontaminate.py) go to contaminated.jsonl with the reason, not into any split.
2. Group (optional, on by default): rows whose MinHash Jaccard similarity reaches the threshold are
   joined (union-find over LSH matches), so near-duplicates always land in the same split.
3. Groups are shuffled with the seed and dealt to the split furthest below its target size.

Streaming, in two passes over the file: the first decontaminates (contaminated rows are written at
once), MinHashes and groups, keeping per row only its LSH signature and a group id; the second reads
the file again and writes every clean row to its split, in file order. Rows are never all in memory,
so files larger than memory split; the output is the same as holding them all.
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from array import array
from collections.abc import Iterable, Iterator
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


def near_dup_groups(items: Iterable[Item], threshold: float = 0.8, num_perm: int = 128, ngram: int = 5) -> list[list[int]]:
    """Indices of `items` (in iteration order; consumed once) grouped so that every pair of near-duplicates
    shares a group (union-find)."""
    index = NearDupIndex(threshold, num_perm, ngram)
    parent = array("q")
    for i, item in enumerate(items):
        parent.append(i)
        m = index.hasher(item.all_text())
        if m is None:
            continue
        for j, _ in index.matches(m):
            a, b = _find(parent, i), _find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
        index.add(m, i)
    groups: dict[int, list[int]] = {}
    for i in range(len(parent)):
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


def _decontaminated(items: Iterator[Item], index: Contamination | None, contaminated: list[tuple[int, str]],
                    fcont) -> Iterator[Item]:
    """The items that do not overlap the evaluation files; the others are written to `fcont` as they come."""
    for item in items:
        reason = index.match(item) if index is not None else None
        if reason:
            contaminated.append((item.line, reason))
            fcont.write(json.dumps({"line": item.line, "reason": reason, "row": item.row}, ensure_ascii=False) + "\n")
        else:
            yield item


def _write_splits(path: str | Path, dealt: dict[str, list[int]], files: dict[str, str], skip_lines: set[int]) -> None:
    """Second pass: read the file again and write each clean row (k-th in file order) to its split."""
    where = bytearray(sum(len(v) for v in dealt.values()))
    names = list(dealt)
    for code, name in enumerate(names):
        for k in dealt[name]:
            where[k] = code
    handles = [open(files[name], "w", encoding="utf-8") for name in names]
    try:
        k = 0
        for item in iter_items(path, SkipReport()):
            if item.line in skip_lines:
                continue
            handles[where[k]].write(json.dumps(item.row, ensure_ascii=False) + "\n")
            k += 1
    finally:
        for h in handles:
            h.close()


def split_file(path: str | Path, out_dir: str | Path, fractions: dict[str, float] | None = None, seed: int = 0,
               group: bool = True, threshold: float = 0.8, num_perm: int = 128,
               eval_files: list[str | Path] | None = None, ngram: int = 13, min_words: int = 8,
               minhash_threshold: float | None = None) -> dict:
    """Split `path` into OUT_DIR/{train,val,test}.jsonl; returns (and writes split_report.json) the report."""
    fractions = _check_fractions(dict(fractions or DEFAULT_FRACTIONS))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = SkipReport()
    contaminated: list[tuple[int, str]] = []  # (line, reason), in file order
    files = {name: str(out / f"{name}.jsonl") for name in fractions}
    index = Contamination(eval_files, ngram, min_words, minhash_threshold, num_perm) if eval_files else None
    if index is not None:
        files["contaminated"] = str(out / "contaminated.jsonl")
    with (open(files["contaminated"], "w", encoding="utf-8") if index is not None else nullcontext()) as fcont:
        clean = _decontaminated(iter_items(path, report), index, contaminated, fcont)
        if group:
            groups = near_dup_groups(clean, threshold, num_perm)
        else:
            groups = [[i] for i in range(sum(1 for _ in clean))]
    dealt = deal(groups, fractions, seed)
    _write_splits(path, dealt, files, {line for line, _ in contaminated})
    multi = [g for g in groups if len(g) > 1]
    result = {
        "input": str(path), "files": files, "seed": seed, "fractions": fractions,
        "rows": {name: len(idx) for name, idx in dealt.items()},
        "rows_skipped": report.skipped, "skip_reasons": report.reasons,
        "grouping": {"on": group, "threshold": threshold, "groups_with_near_duplicates": len(multi),
                     "rows_in_those_groups": sum(len(g) for g in multi), "largest_group": max(map(len, groups), default=0)},
        "decontamination": {"eval_files": [str(e) for e in eval_files or []], "ngram": ngram,
                            "minhash_threshold": minhash_threshold, "removed": len(contaminated),
                            "examples": [{"line": line, "reason": r} for line, r in contaminated[:20]]},
    }
    (out / "split_report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
