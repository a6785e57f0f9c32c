"""The text inside a row, whatever its format: `Slot`s that read and write the user's own row dict.

Data-quality stages analyse and edit text but must write back the user's format and fields, so a row
is kept as read and exposed through slots: (role, field path, holder, key) with `holder[key]` the text.
Formats are those of `tunesmith.data.formats`, plus `preference` (prompt + chosen + rejected).
`iter_items` streams a file into `Item`s, detecting the format from the first row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.formats import SHAREGPT_ROLES, detect_format
from tunesmith.data.readers import RowError, read_rows
from tunesmith.errors import DataError, SkipReport


@dataclass(slots=True)
class Slot:
    role: str  # system | user | assistant | chosen | rejected | text
    path: str  # "messages[2].content", "output"
    holder: dict | list
    key: str | int

    @property
    def text(self) -> str:
        return self.holder[self.key]

    @text.setter
    def text(self, value: str) -> None:
        self.holder[self.key] = value


@dataclass
class Item:
    """One row on its way through the data tools."""

    line: int
    row: dict
    fmt: str
    slots: list[Slot] = field(default_factory=list)

    def texts(self, *roles: str) -> list[str]:
        return [s.text for s in self.slots if not roles or s.role in roles]

    @property
    def prompt(self) -> str:
        """The user side (instruction + input, user turns, or prompt)."""
        return "\n".join(self.texts("user"))

    @property
    def answer(self) -> str:
        """The assistant side (output, assistant turns, completion, chosen)."""
        return "\n".join(self.texts("assistant", "chosen", "text"))

    def all_text(self) -> str:
        return "\n".join(s.text for s in self.slots)


def _str(holder, key, where: str) -> bool:
    value = holder[key] if (isinstance(holder, list) or key in holder) else None
    if value is None:
        return False
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    return True


def _messages(items: object, name: str, role_key: str, content_key: str, roles: Callable[[object], str | None]) -> list[Slot]:
    if not isinstance(items, list):
        raise ValueError(f"{name} must be a list, got {type(items).__name__}")
    slots = []
    for i, msg in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise ValueError(f"{where} must be an object, got {type(msg).__name__}")
        role = roles(msg.get(role_key, msg.get("role")))
        key = content_key if content_key in msg else "content"
        if role is None:
            raise ValueError(f"{where}.{role_key} has an unknown role {msg.get(role_key)!r}")
        if _str(msg, key, f"{where}.{key}"):
            slots.append(Slot(role, f"{where}.{key}", msg, key))
    return slots


def _role(value: object) -> str | None:
    return value if value in ("system", "user", "assistant") else None


def _sharegpt_role(value: object) -> str | None:
    return SHAREGPT_ROLES.get(value.strip().lower()) if isinstance(value, str) else None


def _alpaca(row: dict) -> list[Slot]:
    slots = [Slot("system", "system", row, "system")] if _str(row, "system", "system") else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise ValueError("history must be a list of [user, assistant] pairs")
    for i, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"history[{i}] must be a [user, assistant] pair")
        for j, role in enumerate(("user", "assistant")):
            if _str(pair, j, f"history[{i}][{j}]"):
                slots.append(Slot(role, f"history[{i}][{j}]", pair, j))
    for name, role in (("instruction", "user"), ("input", "user"), ("output", "assistant")):
        if _str(row, name, name):
            slots.append(Slot(role, name, row, name))
    return slots


def _either(row: dict, name: str, role: str) -> list[Slot]:
    """A string field, or a list of {role, content} messages (TRL conversational form)."""
    value = row.get(name)
    if isinstance(value, list):
        slots = _messages(value, name, "role", "content", _role)
        for s in slots:
            s.role = role if s.role == "assistant" and role != "user" else s.role
        return slots
    return [Slot(role, name, row, name)] if _str(row, name, name) else []


SLOTTERS: dict[str, Callable[[dict], list[Slot]]] = {
    "messages": lambda r: _messages(r["messages"], "messages", "role", "content", _role),
    "sharegpt": lambda r: _messages(r["conversations"], "conversations", "from", "value", _sharegpt_role),
    "alpaca": _alpaca,
    "prompt_completion": lambda r: _either(r, "prompt", "user") + _either(r, "completion", "assistant"),
    "preference": lambda r: _either(r, "prompt", "user") + _either(r, "chosen", "chosen") + _either(r, "rejected", "rejected"),
    "text": lambda r: [Slot("text", "text", r, "text")] if _str(r, "text", "text") else [],
}


def row_format(row: dict) -> str | None:
    """The row's format: a `formats.detect_format` one, or `preference` (chosen + rejected)."""
    if isinstance(row, dict) and row.get("chosen") is not None and row.get("rejected") is not None:
        return "preference"
    return detect_format(row)


def slots_of(row: dict, fmt: str) -> list[Slot]:
    """The text slots of a row of a known format; raises ValueError naming the field when malformed."""
    return SLOTTERS[fmt](row)


def iter_items(path: str | Path, report: SkipReport, fmt: str = "auto", on_error: str = "skip",
               rejects: list[tuple[int, dict, str]] | None = None) -> Iterator[Item]:
    """Stream a file as Items. Rows that are not of the file's format are counted in `report` and, when
    they are objects, appended to `rejects` as (line, row, reason) so a caller can keep them."""
    if fmt != "auto" and fmt not in SLOTTERS:
        raise DataError(path, None, "format", f"unknown format {fmt!r}; choose auto or one of {', '.join(SLOTTERS)}")
    chosen = None if fmt == "auto" else fmt
    for line, row in read_rows(path, report, on_error):
        try:
            if chosen is None:
                chosen = row_format(row)
                if chosen is None:
                    raise ValueError(f"cannot tell the data format from fields {sorted(row)[:12]}; "
                                     f"expected one of {', '.join(SLOTTERS)}")
            other = row_format(row)
            if other is not None and other != chosen:
                raise ValueError(f"row looks like format {other}, but the file's format is {chosen}: keep one format per file")
            slots = slots_of(row, chosen)
            if not slots:
                raise ValueError(f"row has no text for format {chosen}")
        except (KeyError, ValueError) as exc:
            msg = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            err = RowError(path, line, None, msg, "unknown format" if chosen is None else "bad row")
            if on_error == "stop":
                raise err from None
            report.skip(err.problem, err.reason)
            if rejects is not None:
                rejects.append((line, row, msg))
            continue
        yield Item(line, row, chosen, slots)


_SPACE = re.compile(r"\s+")


def norm_text(text: str) -> str:
    """Case-folded, whitespace-collapsed text: the form exact duplicates are compared in."""
    return _SPACE.sub(" ", text).strip().casefold()


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def row_hash(row: dict) -> str:
    """sha256 of the row's canonical JSON (sorted keys): equal rows hash equal whatever their key order."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a stage did to a row: changed it (kept) or removed it, and why (the key it is counted under).
    `detail` is shown in the removed-rows side file (e.g. which earlier line it duplicates)."""

    removed: bool
    reason: str
    detail: str = ""


def changed(reason: str) -> Verdict:
    return Verdict(False, reason)


def removed(reason: str, detail: str = "") -> Verdict:
    return Verdict(True, reason, detail)
