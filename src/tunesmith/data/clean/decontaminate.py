"""Decontamination: find training rows that overlap evaluation data.

A training row is contaminated when it shares a word 13-gram with any evaluation text (the test used
for GPT-3, Brown et al. 2020, appendix C), or — for evaluation texts shorter than 13 words but at least
`min_words` long — contains the whole text; optionally also when its MinHash Jaccard similarity with an
evaluation row reaches a threshold (paraphrase-level overlap). N-grams are kept as 8-byte hashes.
"""

from __future__ import annotations

from pathlib import Path

import xxhash

from tunesmith.data.clean.dedup import NearDupIndex
from tunesmith.data.clean.fields import Item, iter_items, words
from tunesmith.errors import SkipReport


def _grams(ws: list[str], n: int) -> set[int]:
    return {xxhash.xxh64_intdigest(" ".join(ws[i:i + n]).encode()) for i in range(len(ws) - n + 1)}


class Contamination:
    """An index of evaluation texts that answers `match(item)` with a reason or None."""

    def __init__(self, eval_files: list[str | Path], ngram: int = 13, min_words: int = 8,
                 minhash_threshold: float | None = None, num_perm: int = 128):
        self.ngram, self.min_words = ngram, min_words
        self.grams: set[int] = set()
        self.short: dict[int, set[int]] = {}  # length k < ngram -> hashes of whole short eval texts
        self.index = NearDupIndex(minhash_threshold, num_perm) if minhash_threshold else None
        self.eval_rows = 0
        self.report = SkipReport()
        for f in eval_files:
            for item in iter_items(f, self.report):
                self._add(item, str(f))

    def _add(self, item: Item, source: str) -> None:
        self.eval_rows += 1
        for text in item.texts():
            ws = words(text)
            if len(ws) >= self.ngram:
                self.grams |= _grams(ws, self.ngram)
            elif len(ws) >= self.min_words:
                self.short.setdefault(len(ws), set()).add(xxhash.xxh64_intdigest(" ".join(ws).encode()))
        if self.index is not None:
            m = self.index.hasher(item.all_text())
            if m is not None:
                self.index.add(m, f"{source}:{item.line}")

    def match(self, item: Item) -> str | None:
        """Why this row is contaminated, or None."""
        for text in item.texts():
            ws = words(text)
            if self.grams and len(ws) >= self.ngram and not self.grams.isdisjoint(_grams(ws, self.ngram)):
                return f"shares a {self.ngram}-gram with the evaluation data"
            for k, hashes in self.short.items():
                if len(ws) >= k and not hashes.isdisjoint(_grams(ws, k)):
                    return f"contains a whole {k}-word evaluation text"
        if self.index is not None:
            m = self.index.hasher(item.all_text())
            hit = self.index.best_match(m) if m is not None else None
            if hit is not None:
                return f"MinHash Jaccard ~{hit[1]:.2f} with {hit[0]}"
        return None
