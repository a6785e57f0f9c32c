"""Fast ROUGE-L for novelty filtering (Self-Instruct keeps a task only if ROUGE-L < 0.7 against the pool).

Tokens follow rouge-score's default tokenizer (lowercase, runs of [a-z0-9], no stemming), so scores equal
`rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure` (a test checks it). The LCS is the
bit-parallel algorithm of Hyyrö (2004) on Python integers: O(len(a) * len(b) / 64) instead of a DP table,
and pool entries keep their match masks, so checking one candidate against thousands of tasks is cheap.
F1 = 2 * LCS / (len(a) + len(b)) (Lin 2004, beta = 1).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _masks(seq: list[str]) -> dict[str, int]:
    """Bit i of masks[t] is set where seq[i] == t."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(seq):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def _lcs(masks: dict[str, int], length: int, other: list[str]) -> int:
    """Length of the longest common subsequence (Hyyrö's bit-vector recurrence)."""
    full = (1 << length) - 1
    v = full
    for tok in other:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return length - bin(v).count("1")


def lcs_length(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    return _lcs(_masks(a), len(a), b)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts (symmetric)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    return 2 * lcs_length(ta, tb) / (len(ta) + len(tb))


class NoveltyPool:
    """Texts seen so far; `most_similar(text)` is the highest ROUGE-L F1 against any of them."""

    def __init__(self, texts: list[str] = ()):
        self._entries: list[tuple[dict[str, int], int]] = []
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, text: str) -> None:
        toks = tokens(text)
        if toks:
            self._entries.append((_masks(toks), len(toks)))

    def most_similar(self, text: str, stop_at: float = 1.0) -> float:
        """Max ROUGE-L F1 against the pool; returns early once a score reaches `stop_at`."""
        cand = tokens(text)
        n, best = len(cand), 0.0
        if not n:
            return 0.0
        for masks, m in self._entries:
            if 2 * min(m, n) / (m + n) <= best:  # even a full match of the shorter text cannot beat best
                continue
            best = max(best, 2 * _lcs(masks, m, cand) / (m + n))
            if best >= stop_at:
                break
        return best
