"""`mix`: combine several data files into one, deterministically.

Source i gets probability P(i) ∝ n_i^α (temperature sampling, as in multilingual/multitask mixing,
e.g. Conneau et al. 2020 and T5; α=1 keeps natural proportions, α in 0.5..0.7 lifts small sources,
α=0 is uniform) or P(i) ∝ w_i for explicit weights. Quotas round P(i)·size by largest remainder; a
source whose quota exceeds its size is repeated whole and topped up by a sample. `balance_field`
then evens out a category: `down` samples every category to the smallest, `up` repeats rows of every
category up to the largest. One seed fixes everything.

Streaming, in two passes: the first reads every source once and spills its rows (as output JSON lines)
to a temporary file next to OUT, keeping only each row's offset (8 bytes) and, when balancing, a category
id; sampling, balancing and shuffling then work on row numbers (random.sample/shuffle depend only on the
length, so the output is byte-identical to sampling the rows themselves); the second pass copies the
chosen lines out by offset. Memory grows with the row count, never with the rows' size.
"""

from __future__ import annotations

import json
import random
import tempfile
from array import array
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tunesmith.data.readers import read_rows
from tunesmith.errors import SkipReport, TunesmithError

MISSING = "<missing>"


def mixing_probabilities(sizes: list[int], alpha: float = 1.0, weights: list[float] | None = None) -> list[float]:
    """P(i) ∝ n_i^α, or ∝ w_i when weights are given."""
    if weights is not None:
        if len(weights) != len(sizes):
            raise TunesmithError(f"got {len(weights)} weights for {len(sizes)} sources; give one weight per source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise TunesmithError(f"weights must be non-negative and not all zero, got {weights}")
        raw = list(map(float, weights))
    else:
        raw = [n ** alpha if n > 0 else 0.0 for n in sizes]
    total = sum(raw)
    return [r / total for r in raw]


def quotas(probs: list[float], size: int) -> list[int]:
    """Integer counts summing to `size`, by largest remainder."""
    exact = [p * size for p in probs]
    counts = [int(x) for x in exact]
    order = sorted(range(len(probs)), key=lambda i: (exact[i] - counts[i], -i), reverse=True)
    for i in order[: size - sum(counts)]:
        counts[i] += 1
    return counts


def take(rows: Sequence, k: int, rng: random.Random) -> list:
    """k rows: whole copies while k exceeds len(rows), then a sample without replacement."""
    if not rows:
        return []
    full, rest = divmod(k, len(rows))
    return (list(rows) * full if full else []) + rng.sample(rows, rest)


def balance_positions(categories: Sequence[str], mode: str, rng: random.Random) -> tuple[list[int], dict]:
    """Positions into `categories` evening them out (down to the smallest group, or up to the largest)."""
    if mode not in ("down", "up"):
        raise TunesmithError(f"balance mode must be 'down' or 'up', got {mode!r}")
    groups: dict[str, list[int]] = defaultdict(list)
    for pos, name in enumerate(categories):
        groups[name].append(pos)
    target = (min if mode == "down" else max)(len(g) for g in groups.values())
    out: list[int] = []
    for name in sorted(groups):
        out += take(groups[name], target, rng)
    return out, {name: {"before": len(g), "after": target} for name, g in sorted(groups.items())}


def category(row: dict, field: str) -> str:
    value = row.get(field)
    return MISSING if value is None else str(value)


def balance(rows: list[dict], field: str, mode: str, rng: random.Random) -> tuple[list[dict], dict]:
    """Even out the categories of `field` (down-sample to the smallest, or repeat up to the largest)."""
    positions, counts = balance_positions([category(r, field) for r in rows], mode, rng)
    return [rows[p] for p in positions], counts


class Spill:
    """Rows of every source as output JSON lines in one temporary file, addressed by global row number."""

    def __init__(self, folder: Path, balance_field: str | None):
        self.file: BinaryIO = tempfile.TemporaryFile(dir=folder, prefix=".mix-")
        self.offsets = array("Q")
        self.field = balance_field
        self.names: dict[str, int] = {}  # category -> id
        self.cats = array("I")

    def add_source(self, src: str | Path, report: SkipReport, source_field: str | None) -> tuple[int, int]:
        """Spill one source; returns its (first global row, row count)."""
        first = len(self.offsets)
        for _, row in read_rows(src, report, "skip"):
            if source_field:
                row = {**row, source_field: str(src)}
            self.offsets.append(self.file.tell())
            self.file.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            if self.field:
                self.cats.append(self.names.setdefault(category(row, self.field), len(self.names)))
        return first, len(self.offsets) - first

    def category_names(self, rows: Sequence[int]) -> list[str]:
        by_id = list(self.names)
        return [by_id[self.cats[g]] for g in rows]

    def copy_out(self, rows: Sequence[int], out: Path) -> None:
        self.file.flush()
        with out.open("wb") as f:
            for g in rows:
                self.file.seek(self.offsets[g])
                f.write(self.file.readline())

    def close(self) -> None:
        self.file.close()


def mix_files(sources: list[str | Path], out: str | Path, size: int | None = None, alpha: float = 1.0,
              weights: list[float] | None = None, seed: int = 0, balance_field: str | None = None,
              balance_mode: str = "down", source_field: str | None = None, manifest: bool = True) -> dict:
    """Mix `sources` into JSONL `out`; returns a report (sizes, probabilities, quotas, categories)."""
    if not sources:
        raise TunesmithError("give at least one source file to mix")
    if Path(out).suffix.lower() != ".jsonl":
        raise TunesmithError(f"{out}: the mixed output is written as JSONL; name it .jsonl")
    rng = random.Random(seed)
    reports = [SkipReport() for _ in sources]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    spill = Spill(Path(out).parent, balance_field)
    try:
        spans = [spill.add_source(s, r, source_field) for s, r in zip(sources, reports)]
        sizes = [n for _, n in spans]
        probs = mixing_probabilities(sizes, alpha, weights)
        size = sum(sizes) if size is None else size
        if size < 1:
            raise TunesmithError(f"target size must be at least 1, got {size}")
        counts = quotas(probs, size)
        mixed: list[int] = []
        for (first, n), k in zip(spans, counts):
            mixed += take(range(first, first + n), k, rng)
        categories = None
        if balance_field:
            positions, categories = balance_positions(spill.category_names(mixed), balance_mode, rng)
            mixed = [mixed[p] for p in positions]
        rng.shuffle(mixed)
        spill.copy_out(mixed, Path(out))
    finally:
        spill.close()
    report = {
        "output": str(out), "rows": len(mixed), "seed": seed, "alpha": None if weights else alpha, "weights": weights,
        "sources": [{"path": str(s), "rows": n, "probability": round(p, 6), "taken": k, "repeated": k > n, "skipped": r.skipped}
                    for s, n, p, k, r in zip(sources, sizes, probs, counts, reports)],
        "balance": {"field": balance_field, "mode": balance_mode, "categories": categories} if balance_field else None,
    }
    if manifest:
        from tunesmith.data.versioning import write_manifest

        write_manifest(out, parents=list(sources), recipe={"mix": {k: report[k] for k in ("seed", "alpha", "weights", "balance")}})
    return report
