"""Exact and near-duplicate detection.

Exact: a 16-byte blake2b digest of the normalised (case-folded, whitespace-collapsed) text at one of
three levels: `instruction` (the user side), `pair` (user side + assistant side) or `conversation`
(every turn with its role, system included). The first row wins; later copies are removed.

Near: MinHash (Broder 1997) over word n-grams (5 by default), indexed with datasketch's MinHashLSH.
Banding is tuned for recall (false-negative weight 0.95: 16 bands x 8 rows for 128 permutations and
threshold 0.8, so a pair at exactly J=0.8 becomes a candidate with probability 1-(1-0.8^8)^16 = 0.95;
datasketch's balanced default, 9 x 13, catches only 40% there). Candidates are then confirmed by the
signatures' estimated Jaccard, unless it is significantly below the threshold t (one-sided 95%: below
t - 1.645*sqrt(t(1-t)/num_perm), e.g. 0.742 for t=0.8, 128 permutations), which removes the banding's
false positives without losing true pairs to the estimator's noise. Signatures are kept as uint32 arrays (num_perm x 4 bytes a row) and band keys as
8-byte xxhash digests, so 1M rows stay within a few GB.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.data.clean.fields import Item, Verdict, norm_text, removed, words

Level = Literal["instruction", "pair", "conversation"]
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights for datasketch's band choice
Z_95 = 1.645  # one-sided 95% normal quantile


def exact_key(item: Item, level: Level) -> bytes:
    """The digest two rows share when they are exact duplicates at this level."""
    if level == "instruction":
        text = item.prompt if item.prompt else item.all_text()
    elif level == "pair":
        text = item.prompt + "\x1f" + item.answer
    else:
        text = "\x1e".join(f"{s.role}\x1f{s.text}" for s in item.slots)
    return hashlib.blake2b(norm_text(text).encode(), digest_size=16).digest()


class ExactDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Level = Field("pair", description="instruction (same prompt), pair (same prompt and answer) or conversation (every turn)")


class ExactDedupStage:
    def __init__(self, cfg: ExactDedupConfig):
        self.cfg = cfg
        self.seen: dict[bytes, int] = {}  # digest -> line of the first row

    def __call__(self, item: Item) -> Verdict | None:
        key = exact_key(item, self.cfg.level)
        first = self.seen.setdefault(key, item.line)
        if first != item.line:
            return removed(f"exact duplicate ({self.cfg.level})", f"same {self.cfg.level} as line {first}")
        return None


# ---------------------------------------------------------------- MinHash


def shingles(text: str, n: int) -> set[bytes]:
    """Word n-grams of the case-folded text; a text shorter than n words is one shingle."""
    w = words(text)
    if len(w) <= n:
        return {" ".join(w).encode()} if w else set()
    return {" ".join(w[i:i + n]).encode() for i in range(len(w) - n + 1)}


class MinHasher:
    """Signatures with one set of permutations (datasketch's affine32 scheme, xxh32 shingle hashes)."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        self.permutations = MinHash(num_perm, seed=seed).permutations

    def __call__(self, text: str) -> MinHash | None:
        grams = shingles(text, self.ngram)
        if not grams:
            return None
        m = MinHash(self.num_perm, seed=self.seed, hashfunc=xxhash.xxh32_intdigest,
                    permutations=self.permutations, scheme="affine32")
        m.update_batch(list(grams))
        return m


class NearDupIndex:
    """MinHashLSH plus the signatures, so candidates are confirmed by estimated Jaccard."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        self.threshold = threshold
        self.confirm = threshold - Z_95 * math.sqrt(threshold * (1 - threshold) / num_perm)
        self.hasher = MinHasher(num_perm, ngram, seed)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS,
                              hashfunc=lambda b: xxhash.xxh64_digest(b))
        self.signatures: list[np.ndarray] = []
        self.labels: list[object] = []

    def matches(self, m: MinHash) -> list[tuple[object, float]]:
        """Indexed entries confirmed as near-duplicates (see the module docstring), as (label, estimated Jaccard), most similar first."""
        found = []
        for key in self.lsh.query(m):
            sim = float(np.count_nonzero(self.signatures[key] == m.hashvalues)) / self.hasher.num_perm
            if sim >= self.confirm:
                found.append((self.labels[key], sim))
        return sorted(found, key=lambda x: -x[1])

    def best_match(self, m: MinHash) -> tuple[object, float] | None:
        found = self.matches(m)
        return found[0] if found else None

    def add(self, m: MinHash, label: object) -> int:
        key = len(self.signatures)
        self.signatures.append(np.asarray(m.hashvalues, dtype=np.uint32))
        self.labels.append(label)
        self.lsh.insert(key, m, check_duplication=False)
        return key

    def check_and_add(self, text: str, label: object) -> tuple[object, float] | None:
        """The earlier entry this text nearly duplicates (and it is not added), or None (and it is)."""
        m = self.hasher(text)
        if m is None:
            return None
        match = self.best_match(m)
        if match is None:
            self.add(m, label)
        return match


class NearDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity at or above which two rows are near-duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (more = more exact, slower)")
    ngram: int = Field(5, ge=1, le=20, description="word n-gram (shingle) size")
    seed: int = Field(1, description="seed of the MinHash permutations")
    field: Literal["all", "prompt", "answer"] = Field("all", description="which text is compared: every turn, the user side, or the assistant side")


class NearDedupStage:
    def __init__(self, cfg: NearDedupConfig):
        self.cfg = cfg
        self.index = NearDupIndex(cfg.threshold, cfg.num_perm, cfg.ngram, cfg.seed)

    def __call__(self, item: Item) -> Verdict | None:
        text = {"all": item.all_text, "prompt": lambda: item.prompt, "answer": lambda: item.answer}[self.cfg.field]()
        match = self.index.check_and_add(text, item.line)
        if match is not None:
            return removed("near duplicate", f"Jaccard ~{match[1]:.2f} with line {match[0]}")
        return None
