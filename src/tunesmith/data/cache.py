"""On-disk cache of tokenised examples: tokenise once, reuse on every rerun with the same inputs.

The key is a SHA-256 over everything that changes the examples: each file's path, content hash, format
and column map; the tokenizer (its full serialised pipeline, or vocab + special tokens), the resolved
chat template text; and the data settings (max_length, overlong, train_on, system_prompt, on_error).
Any change gives a new key, so a stale entry is never read. An entry is one `.npz` (flat int32 token
arrays, no pickle) holding the examples and the skip report, written atomically (temp file + rename);
an unreadable entry is rebuilt with a warning. Old entries are pruned to the newest `MAX_ENTRIES`.

Other item kinds (preference pairs, KTO rows, RL prompts) use the same entries through a `Codec`: it maps
its items onto token rows plus one JSON value per item (prompt length, margin, label, ...), and its name and
settings join the key, so entries of different kinds never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from tunesmith.data.templates import Example
from tunesmith.data.versioning import file_sha256
from tunesmith.errors import InputProblem, SkipReport

if TYPE_CHECKING:
    from tunesmith.config.schema import DataConfig, DataSource

CACHE_FORMAT = 1  # bump when rendering or the entry layout changes: every old entry misses
MAX_ENTRIES = 64
DATA_FIELDS = ("max_length", "overlong", "train_on", "system_prompt", "on_error", "template")


class TokenCacheWarning(UserWarning):
    """A cache entry could not be read or written; the examples are (re)built from the files."""


@dataclass(frozen=True)
class Codec:
    """How a non-SFT item list is stored: `pack(items) -> (token rows, one JSON value per item)` and
    `unpack(rows, values) -> items` (raise on any mismatch). `name`, `fields` (the DataConfig settings that
    change the items) and `extra` (other settings, e.g. the prompt budget) are part of the key."""

    name: str
    pack: Callable[[list], tuple[list[Example], list]]
    unpack: Callable[[list[Example], list], list]
    fields: tuple[str, ...] = DATA_FIELDS
    extra: tuple[tuple[str, Any], ...] = ()


def default_dir() -> Path:
    """`<tunesmith cache dir>/tokenized` ($TUNESMITH_CACHE or the user cache dir)."""
    from tunesmith.models.load import cache_dir

    return cache_dir() / "tokenized"


def tokenizer_digest(tokenizer) -> str:
    """Hash of what decides token ids: the fast tokenizer's full pipeline (normaliser, pre-tokeniser, model,
    added tokens) when available, else the vocab; plus special tokens and the (resolved) chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")}
    h.update(json.dumps([type(tokenizer).__name__, special, getattr(tokenizer, "add_bos_token", None)], default=str).encode())
    template = tokenizer.chat_template
    h.update(json.dumps(template, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cache_key(sources: list[DataSource], tokenizer, data_cfg: DataConfig, codec: Codec | None = None) -> str:
    """Key over files (path, content, format, columns), tokenizer + template, and the data settings
    (plus the codec's name and extra settings for non-SFT items)."""
    from tunesmith import __version__

    files = [[s.path, file_sha256(s.path), s.format, sorted(s.columns.items())] for s in sources]
    settings = {name: getattr(data_cfg, name) for name in (codec.fields if codec else DATA_FIELDS)}
    parts = [CACHE_FORMAT, __version__, files, tokenizer_digest(tokenizer), settings]
    if codec is not None:  # SFT keys stay as they were
        parts.append([codec.name, list(codec.extra)])
    payload = json.dumps(parts, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _report_dict(report: SkipReport) -> dict:
    return {"total": report.total, "kept": report.kept, "reasons": report.reasons,
            "examples": [vars(p) for p in report.examples], "notes": getattr(report, "notes", {})}


def save_entry(path: Path, examples: list[Example], report: SkipReport, items: list | None = None) -> None:
    """Write examples + report (+ per-item JSON values) atomically to `path` (.npz).

    Raises ValueError when `items` do not survive a JSON round trip exactly (nothing is written)."""
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    flat_ids = np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int32, count=int(lengths.sum()))
    flat_labels = np.fromiter((t for e in examples for t in e.labels), dtype=np.int32, count=int(lengths.sum()))
    meta = {"format": CACHE_FORMAT, "rows": [[e.source, e.line, e.truncated] for e in examples], "report": _report_dict(report)}
    if items is not None:
        meta["items"] = items
    try:
        blob = json.dumps(meta, allow_nan=False).encode()
        exact = items is None or json.loads(blob)["items"] == items  # e.g. tuples or non-string keys in raw rows
    except (TypeError, ValueError) as exc:  # e.g. datetimes, NaN
        raise ValueError(f"the items hold values JSON cannot store exactly ({exc})") from None
    if not exact:
        raise ValueError("the items hold values JSON cannot store exactly")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, lengths=lengths, input_ids=flat_ids, labels=flat_labels,
                 meta=np.frombuffer(blob, dtype=np.uint8))
    os.replace(tmp, path)


def load_entry(path: Path):
    """(examples, DataReport) from an entry; raises on any damage (caller rebuilds)."""
    examples, report, _ = read_entry(path)
    return examples, report


def read_entry(path: Path):
    """(examples, DataReport, per-item JSON values or None) from an entry; raises on any damage."""
    from tunesmith.data.dataset import DataReport

    with np.load(path, allow_pickle=False) as z:
        lengths, ids, labels = z["lengths"], z["input_ids"], z["labels"]
        meta = json.loads(z["meta"].tobytes().decode())
    if meta.get("format") != CACHE_FORMAT or len(meta["rows"]) != len(lengths) or not int(lengths.sum()) == len(ids) == len(labels):
        raise ValueError("entry layout does not match")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    examples = [Example(ids[a:b].tolist(), labels[a:b].tolist(), src, line, trunc)
                for a, b, (src, line, trunc) in zip(starts, ends, meta["rows"])]
    r = meta["report"]
    report = DataReport(total=r["total"], kept=r["kept"], reasons=dict(r["reasons"]),
                        examples=[InputProblem(**p) for p in r["examples"]], notes=dict(r["notes"]))
    return examples, report, meta.get("items")


def _prune(folder: Path) -> None:
    """Keep the newest MAX_ENTRIES entries (hits refresh an entry's mtime)."""
    entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)


def cached_build(sources: list[DataSource], tokenizer, data_cfg: DataConfig, build: Callable[[], tuple],
                 codec: Codec | None = None):
    """`build()` -> (examples, report), served from the cache (`data_cfg.cache_dir`) when the key matches, or
    just `build()` when `data_cfg.cache` is off; with a `codec`, `build()` returns that codec's items instead of
    SFT examples.

    Errors raised by `build` (e.g. a bad row with on_error=stop) propagate and nothing is stored."""
    if not data_cfg.cache:
        return build()
    folder = Path(data_cfg.cache_dir) if data_cfg.cache_dir else default_dir()
    try:
        path = folder / f"{cache_key(sources, tokenizer, data_cfg, codec)}.npz"
    except OSError:  # e.g. a missing file: building reports it properly (file, line, field)
        return build()
    if path.exists():
        try:
            examples, report, items = read_entry(path)
            result = codec.unpack(examples, items) if codec else examples
            os.utime(path)  # recently used entries survive pruning
            return result, report
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            warnings.warn(f"tokenisation cache entry {path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it",
                          TokenCacheWarning, stacklevel=2)
    result, report = build()
    try:
        examples, items = codec.pack(result) if codec else (result, None)
        save_entry(path, examples, report, items)
        _prune(folder)
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not write tokenisation cache entry {path}: {exc}", TokenCacheWarning, stacklevel=2)
    return result, report
