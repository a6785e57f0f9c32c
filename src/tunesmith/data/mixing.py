"""`mix`: combine several data files into one, deterministically.

Source i gets probability P(i) ∝ n_i^α (temperature sampling, as in multilingual/multitask mixing,
e.g. Conneau et al. 2020 and T5; α=1 keeps natural proportions, α in 0.5..0.7 lifts small sources,
α=0 is uniform) or P(i) ∝ w_i for explicit weights. Quotas round P(i)·size by largest remainder; a
source whose quota exceeds its size is repeated whole and topped up by a sample. `balance_field`
then evens out a category: `down` samples every category to the smallest, `up` repeats rows of every
category up to the largest. One seed fixes everything.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

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


def take(rows: list, k: int, rng: random.Random) -> list:
    """k rows: whole copies while k exceeds len(rows), then a sample without replacement."""
    if not rows:
        return []
    full, rest = divmod(k, len(rows))
    return rows * full + rng.sample(rows, rest)


def balance(rows: list[dict], field: str, mode: str, rng: random.Random) -> tuple[list[dict], dict]:
    """Even out the categories of `field` (down-sample to the smallest, or repeat up to the largest)."""
    if mode not in ("down", "up"):
        raise TunesmithError(f"balance mode must be 'down' or 'up', got {mode!r}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        value = row.get(field)
        groups[MISSING if value is None else str(value)].append(row)
    target = (min if mode == "down" else max)(len(g) for g in groups.values())
    out = []
    for name in sorted(groups):
        out += take(groups[name], target, rng)
    counts = {name: {"before": len(g), "after": target} for name, g in sorted(groups.items())}
    return out, counts


def _read(path: str | Path, report: SkipReport) -> list[dict]:
    return [row for _, row in read_rows(path, report, "skip")]


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
    data = [_read(s, r) for s, r in zip(sources, reports)]
    sizes = [len(d) for d in data]
    probs = mixing_probabilities(sizes, alpha, weights)
    size = sum(sizes) if size is None else size
    if size < 1:
        raise TunesmithError(f"target size must be at least 1, got {size}")
    counts = quotas(probs, size)
    mixed = []
    for src, rows, k in zip(sources, data, counts):
        picked = take(rows, k, rng)
        mixed += [{**r, source_field: str(src)} for r in picked] if source_field else picked
    categories = None
    if balance_field:
        mixed, categories = balance(mixed, balance_field, balance_mode, rng)
    rng.shuffle(mixed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Path(out).open("w", encoding="utf-8") as f:
        for row in mixed:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
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
