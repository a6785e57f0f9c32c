"""Append-only JSONL output that a rerun resumes: every row carries a stable item id; done ids are skipped.

An item (one prompt to evolve, critique or judge; one self-instruct request) ends in exactly one terminal
sink: the output rows, or the rejected side file with its reason, so filtered items are not redone either.
Items whose backend call failed are written nowhere and are retried by the next run. Secondary sinks (e.g. the
preference pairs next to constitutional SFT rows) are written first, so a kill between the two writes leaves
the item not done and the rerun skips the secondary row it already has instead of duplicating it.
A last line cut short by a kill is dropped on open.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tunesmith.errors import DataError


def stable_id(prefix: str, payload: object) -> str:
    """`prefix-<12 hex>`: the same input gives the same id in every run."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def item_of(row: dict) -> str:
    """The item a row belongs to: `item` when one item gave several rows, else its `id`."""
    return str(row.get("item") or row["id"])


def _repair_and_read(path: Path) -> tuple[list[dict], bool]:
    """Rows of an existing output file; a truncated last line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    repaired = False
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(data))
        repaired = True
    rows = []
    for lineno, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(path, lineno, None, f"existing output is not JSONL ({exc.msg}); move it away or pick another --out") from None
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(path, lineno, "id", "existing output row has no 'id': it was not written by tunesmith data synth; pick another --out")
        rows.append(row)
    return rows, repaired


class ResumableOutput:
    """Named JSONL sinks sharing one done-set. `sinks` maps a name to a path; names in `secondary` do not mark done."""

    def __init__(self, sinks: dict[str, Path], secondary: Iterable[str] = ()):
        self.paths = {name: Path(p) for name, p in sinks.items()}
        self.secondary = set(secondary)
        self.rows: dict[str, list[dict]] = {}  # every row, from earlier runs and this one
        self.ids: dict[str, set[str]] = {}
        self.repaired: list[str] = []
        self.done: set[str] = set()
        for name, path in self.paths.items():
            rows, repaired = _repair_and_read(path)
            if repaired:
                self.repaired.append(str(path))
            self.rows[name] = rows
            self.ids[name] = {str(r["id"]) for r in rows}
            if name not in self.secondary:
                self.done.update(item_of(r) for r in rows)
        self.resumed = len(self.done)
        self.written: dict[str, int] = {name: 0 for name in self.paths}
        self._handles: dict = {}

    def is_done(self, item: str) -> bool:
        return item in self.done

    def write(self, sink: str, row: dict) -> None:
        """Append one row (it must have an 'id') and flush, unless this sink already holds that id."""
        row_id = str(row["id"])
        if row_id in self.ids[sink]:
            return
        if sink not in self._handles:
            self.paths[sink].parent.mkdir(parents=True, exist_ok=True)
            self._handles[sink] = self.paths[sink].open("a", encoding="utf-8")
        handle = self._handles[sink]
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        self.ids[sink].add(row_id)
        self.rows[sink].append(row)
        self.written[sink] += 1
        if sink not in self.secondary:
            self.done.add(item_of(row))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> ResumableOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SynthProgress:
    """A rich progress bar over items with running kept / rejected / failed counts (on stderr)."""

    def __init__(self, label: str, total: int | None, done: int = 0, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.counts = {"kept": 0, "rejected": 0, "failed": 0}
        self._bar = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[kept]} kept · {task.fields[rejected]} rejected · {task.fields[failed]} failed"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
        )
        self._task = self._bar.add_task(label, total=total, completed=done, **self.counts)

    def advance(self, kept: int = 0, rejected: int = 0, failed: int = 0, steps: int | None = None) -> None:
        for key, n in (("kept", kept), ("rejected", rejected), ("failed", failed)):
            self.counts[key] += n
        self._bar.update(self._task, advance=kept + rejected + failed if steps is None else steps, **self.counts)

    def __enter__(self) -> SynthProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()
