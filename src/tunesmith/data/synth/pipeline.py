"""What every synth method shares: reading prompts, the resumable batch driver, and the run report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.data.readers import read_rows
from tunesmith.data.synth.backends import BackendStats
from tunesmith.data.synth.resumable import ResumableOutput, SynthProgress, stable_id
from tunesmith.errors import DataError, SkipReport


@dataclass
class Item:
    """One unit of work: the prompt conversation, an existing answer if the row had one, and its stable id."""

    id: str
    messages: list[dict]  # ends with the user turn
    answer: str | None = None
    row: dict = field(default_factory=dict)
    line: int = 0

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


@dataclass
class Outcome:
    """What became of an item: rows per sink (kept), a rejection reason, or a backend failure (retried later)."""

    item: Item
    rows: dict[str, list[dict]] = field(default_factory=dict)
    reject: str | None = None
    detail: dict = field(default_factory=dict)
    failed: bool = False


@dataclass
class SynthReport:
    """Counts of one run; `rejected` by reason, `extra` holds method-specific counts (ties, unparsable, ...)."""

    method: str
    inputs: int = 0
    resumed: int = 0
    duplicates: int = 0
    processed: int = 0
    kept: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    backend: BackendStats = field(default_factory=BackendStats)
    outputs: dict[str, str] = field(default_factory=dict)
    input_skips: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n

    def count(self, key: str, n: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def to_dict(self) -> dict:
        return asdict(self) | {"backend": asdict(self.backend) | {"failed": self.backend.failed}}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _text(value: object, path: str, line: int, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, name, "must be a non-empty string")
    return value


def _messages(value: object, path: str, line: int, name: str) -> tuple[list[dict], str | None]:
    """A {role, content} list: the turns up to the last user one, and a final assistant answer if present."""
    if not isinstance(value, list) or not value:
        raise DataError(path, line, name, "must be a non-empty list of {role, content} messages")
    turns = []
    for i, m in enumerate(value):
        role = m.get("role", m.get("from")) if isinstance(m, dict) else None
        content = m.get("content", m.get("value")) if isinstance(m, dict) else None
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise DataError(path, line, f"{name}[{i}]", "must be a message {role: system|user|assistant, content: str}")
        turns.append({"role": role, "content": content})
    answer = turns.pop()["content"] if turns[-1]["role"] == "assistant" else None
    if not turns or turns[-1]["role"] != "user":
        raise DataError(path, line, name, "must end with a user turn (optionally followed by one assistant answer)")
    return turns, answer


def item_from_row(row: dict, path: str, line: int, prefix: str) -> Item:
    """prompt (+ completion/answer), instruction (+ input, output), or messages/conversations."""
    if "instruction" in row:
        prompt = _text(row["instruction"], path, line, "instruction")
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        messages, answer = [{"role": "user", "content": prompt}], row.get("output")
    elif "prompt" in row and isinstance(row["prompt"], str):
        messages = [{"role": "user", "content": _text(row["prompt"], path, line, "prompt")}]
        answer = row.get("completion", row.get("answer"))
    elif "messages" in row or "conversations" in row or "prompt" in row:
        name = next(k for k in ("messages", "conversations", "prompt") if k in row)
        messages, answer = _messages(row[name], path, line, name)
    else:
        raise DataError(path, line, None, f"needs 'prompt', 'instruction' or 'messages'; the row has {sorted(row)}")
    answer = answer if isinstance(answer, str) and answer.strip() else None
    return Item(stable_id(prefix, row), messages, answer, row, line)


def read_items(path: str | Path, prefix: str, report: SynthReport, on_error: str = "skip") -> list[Item]:
    """Items of an input file; bad rows are counted in report.input_skips (or raise with on_error='stop')."""
    skips = SkipReport()
    items: list[Item] = []
    for line, row in read_rows(path, skips, on_error):
        try:
            items.append(item_from_row(row, str(path), line, prefix))
        except DataError as err:
            if on_error == "stop":
                raise
            skips.skip(err.problem, "bad row")
    report.input_skips = dict(skips.reasons)
    if not items:
        raise DataError(path, None, None, f"no usable prompts ({skips.summary()})")
    report.inputs = len(items)
    return items


def complete_map(backend, conversations: dict[int, list[dict]], temperature: float, max_new_tokens: int,
                 seed: int) -> dict[int, str | None]:
    """Complete a {position: conversation} dict in one backend call; answers keyed the same way."""
    if not conversations:
        return {}
    keys = list(conversations)
    return dict(zip(keys, backend.complete([conversations[k] for k in keys], temperature, max_new_tokens, seed)))


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


Step = Callable[[list[Item]], list[Outcome]]


def run_items(items: list[Item], output: ResumableOutput, step: Step, report: SynthReport, *, batch_size: int,
              limit: int | None = None, label: str = "synth", progress: bool = True) -> SynthReport:
    """Skip done and duplicate items, then process the rest in batches, writing each outcome as it arrives."""
    seen: set[str] = set()
    todo = []
    for item in items:
        if output.is_done(item.id):
            report.resumed += 1
        elif item.id in seen:
            report.duplicates += 1
        else:
            seen.add(item.id)
            todo.append(item)
    todo = todo[:limit] if limit is not None else todo
    with SynthProgress(label, total=len(todo), enabled=progress) as bar:
        for batch in chunks(todo, batch_size):
            for outcome in step(batch):
                record(outcome, output, report)
                bar.advance(kept=int(bool(outcome.rows)), rejected=int(outcome.reject is not None), failed=int(outcome.failed))
    return report


def record(outcome: Outcome, output: ResumableOutput, report: SynthReport) -> None:
    """Write one outcome: secondary sinks first, then the terminal ones; rejections go to the 'rejected' sink."""
    report.processed += 1
    if outcome.failed:
        report.failed += 1
        return
    if outcome.reject is not None:
        report.reject(outcome.reject)
        output.write("rejected", {"id": outcome.item.id, "reason": outcome.reject, "prompt": outcome.item.prompt} | outcome.detail)
        return
    report.kept += 1
    for sink in sorted(outcome.rows, key=lambda s: s not in output.secondary):
        for row in outcome.rows[sink]:
            output.write(sink, row)
            report.rows[sink] = report.rows.get(sink, 0) + 1


def side_path(out: Path, suffix: str) -> Path:
    """OUT.jsonl -> OUT.<suffix>.jsonl (rejected, pairs, ties) next to the output."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{suffix}.jsonl")


def strip_label(text: str, labels: tuple[str, ...]) -> str:
    """Drop a leading 'Revision:' / '#Rewritten Prompt#:'-style label the model echoed back."""
    t = text.strip()
    for label in labels:
        if t.lower().startswith(label.lower()):
            t = t[len(label) :].lstrip(" :\n")
    return t.strip()
