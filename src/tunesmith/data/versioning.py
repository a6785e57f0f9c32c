"""Dataset versions: a manifest next to a data file, and a row-level diff between two files.

The manifest (FILE.manifest.json) records the sha256 of the file's bytes (its version id is the first
12 hex digits), the row count, the format and schema (field -> JSON types seen and how many rows have
it), the parent versions it was made from, and the recipe and per-stage stats when `clean` made it.
`diff_files` compares rows by the sha256 of their canonical JSON; a removed and an added row with the
same key (an `id` field, else the prompt text) count as one changed row, with the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from tunesmith.data.clean.fields import norm_text, row_format, row_hash, slots_of
from tunesmith.data.readers import read_rows
from tunesmith.errors import SkipReport

_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "object", type(None): "null"}


def manifest_path(path: str | Path) -> Path:
    return Path(f"{path}.manifest.json")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _key(row: dict) -> str | None:
    """What identifies a row across versions: its `id`, else its prompt text."""
    if row.get("id") is not None:
        return f"id:{row['id']}"
    fmt = row_format(row)
    try:
        slots = slots_of(row, fmt) if fmt else []
    except (KeyError, ValueError):
        return None
    prompt = "\n".join(s.text for s in slots if s.role in ("user", "system"))
    return f"prompt:{norm_text(prompt)}" if prompt else None


def describe(path: str | Path) -> dict:
    """Rows, format and schema of a data file (bad rows counted, not fatal)."""
    report, fields, formats = SkipReport(), {}, Counter()
    rows = 0
    for _, row in read_rows(path, report, "skip"):
        rows += 1
        formats[row_format(row) or "unknown"] += 1
        for name, value in row.items():
            f = fields.setdefault(name, {"rows": 0, "types": Counter()})
            f["rows"] += 1
            f["types"][_TYPES.get(type(value), type(value).__name__)] += 1
    schema = {k: {"rows": v["rows"], "types": dict(v["types"])} for k, v in fields.items()}
    fmt = formats.most_common(1)[0][0] if formats else "unknown"
    return {"rows": rows, "format": fmt, "formats": dict(formats), "schema": schema,
            "rows_skipped": report.skipped, "skip_reasons": report.reasons}


def _parent(p: str | Path) -> dict:
    sha = file_sha256(p) if Path(p).is_file() else None
    entry = {"path": str(p), "sha256": sha, "version": sha[:12] if sha else None}
    m = manifest_path(p)
    if m.is_file():
        entry["manifest"] = str(m)
    return entry


def write_manifest(path: str | Path, parents: list[str | Path] | None = None, recipe: dict | None = None,
                   stats: dict | None = None) -> dict:
    """Write FILE.manifest.json for a data file and return it."""
    described = describe(path)  # first: a missing or unreadable file raises a DataError here
    sha = file_sha256(path)
    manifest = {
        "file": Path(path).name, "sha256": sha, "version": sha[:12], "bytes": Path(path).stat().st_size,
        **described,
        "parents": [_parent(p) for p in parents or []],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if recipe is not None:
        manifest["recipe"] = recipe
    if stats is not None:
        manifest["stats"] = stats
    manifest_path(path).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _index(path: str | Path) -> tuple[Counter, dict[str, dict], set[str]]:
    hashes: Counter = Counter()
    rows: dict[str, dict] = {}
    fields: set[str] = set()
    for _, row in read_rows(path, SkipReport(), "skip"):
        h = row_hash(row)
        hashes[h] += 1
        rows.setdefault(h, row)
        fields |= set(row)
    return hashes, rows, fields


def _pair_changes(gone: list[dict], new: list[dict]) -> tuple[int, Counter, set[str]]:
    """Match removed and added rows by key: (changed rows, fields that differ -> count, keys matched)."""
    by_key = {}
    for row in gone:
        k = _key(row)
        if k is not None:
            by_key.setdefault(k, row)
    changed, field_changes, matched = 0, Counter(), set()
    for row in new:
        k = _key(row)
        if k is None or k not in by_key or k in matched:
            continue
        old = by_key[k]
        matched.add(k)
        changed += 1
        for f in set(old) | set(row):
            if old.get(f) != row.get(f):
                field_changes[f] += 1
    return changed, field_changes, matched


def diff_files(a: str | Path, b: str | Path) -> dict:
    """What changed from file A to file B: rows added, removed, changed, unchanged, and field changes."""
    ha, rows_a, fields_a = _index(a)
    hb, rows_b, fields_b = _index(b)
    gone = ha - hb  # multiset difference: a row duplicated 3 times in A and once in B lost 2 copies
    new = hb - ha
    changed, field_changes, _ = _pair_changes([rows_a[h] for h in gone], [rows_b[h] for h in new])
    return {
        "a": {"path": str(a), "sha256": file_sha256(a), "rows": sum(ha.values())},
        "b": {"path": str(b), "sha256": file_sha256(b), "rows": sum(hb.values())},
        "identical": ha == hb,
        "unchanged": sum((ha & hb).values()),
        "added": sum(new.values()) - changed,
        "removed": sum(gone.values()) - changed,
        "changed": changed,
        "changed_fields": dict(field_changes.most_common()),
        "fields_added": sorted(fields_b - fields_a),
        "fields_removed": sorted(fields_a - fields_b),
    }
