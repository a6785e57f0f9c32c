"""Field access and error wording for `formats.py`: the format constants, format detection, a checked view of one row
(`Row`, whose accessors raise `RowError`s naming the field, with spelling suggestions), column mapping,
and the diagnostics for rows whose format cannot be told or does not match the file's.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.readers import RowError
from tunesmith.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
REQUIRED = {  # in auto-detection order
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL = {"alpaca": ("input", "system", "history"), "sharegpt": ("system",)}
KNOWN_FIELDS = tuple(dict.fromkeys(f for fmt in REQUIRED for f in REQUIRED[fmt] + OPTIONAL.get(fmt, ())))
NEEDS = "; ".join(f"{fmt} needs {' + '.join(REQUIRED[fmt])}" for fmt in REQUIRED)
LIST_FIELDS = ("messages", "conversations", "history")  # CSV cells may hold these as JSON text


@dataclass(slots=True)
class Turn:
    role: str
    content: str
    at: str | tuple[str, int]  # where it came from: a field ("output") or a list item (("messages", 2))
    role_key: str = ""  # key of the role / content inside a list item ("from", "value")
    content_key: str = ""

    def _path(self, key: str) -> str:  # built only for errors: "messages[2].role", "history[0][1]"
        base = self.at if isinstance(self.at, str) else f"{self.at[0]}[{self.at[1]}]"
        return f"{base}.{key}" if key else base

    @property
    def role_field(self) -> str:
        return self._path(self.role_key)

    @property
    def content_field(self) -> str:
        return self._path(self.content_key)


@dataclass
class Row:
    """One row after column mapping, with what is needed to word its errors."""

    data: dict
    fmt: str
    source: str
    line: int
    columns: dict[str, str] = field(default_factory=dict)

    def fail(self, where: str | None, message: str, reason: str) -> RowError:
        return RowError(self.source, self.line, where, message, reason)

    def require(self, name: str):
        if self.data.get(name) is None:
            raise self._missing(name)
        return self.data[name]

    def _missing(self, name: str) -> RowError:
        col = self.columns.get(name, name)
        what = "is null" if name in self.data else "is missing"
        if col != name:
            what += f" (read from column '{col}' as mapped by columns)"
        msg = f"{what}; format {self.fmt} needs {' + '.join(REQUIRED[self.fmt])}"
        spare = [k for k in self.data if k not in KNOWN_FIELDS]
        close = difflib.get_close_matches(name, spare, n=1, cutoff=0.6)
        if close:
            msg += f"; the row has '{close[0]}': did you mean '{name}'? Rename it, or map it with columns: {{{name}: {close[0]}}}"
        else:
            msg += f"; the row has: {field_names(self.data)}"
        return self.fail(name, msg, "missing field")

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {type_name(value)}", "wrong type")
        return value

    def optional_string(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or value == "":
            return None
        return self.string(value, name)

    def as_list(self, value: object, where: str) -> list:
        if isinstance(value, str) and Path(self.source).suffix.lower() == ".csv":
            try:  # a CSV cell can only hold a list as JSON text
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise self.fail(where, f"must be a list; in a CSV file write it as JSON text ({e.msg} at column {e.colno})", "wrong type") from None
        if not isinstance(value, (list, tuple)):
            raise self.fail(where, f"must be a list, got {type_name(value)}", "wrong type")
        return list(value)

    def key(self, obj: dict, name: str, where: str):
        """obj[name] for a nested object (a message), with a suggestion when the key is misspelled."""
        if name not in obj:
            close = difflib.get_close_matches(name, [k for k in obj if isinstance(k, str)], n=1, cutoff=0.6)
            hint = f"; it has '{close[0]}': did you mean '{name}'?" if close else f"; it has: {field_names(obj)}"
            raise self.fail(f"{where}.{name}", f"is missing{hint}", "missing field")
        return obj[name]

    def message(self, msg: object, container: str, i: int) -> Turn:
        """An OpenAI-style {role, content} message; roles system/user/assistant only."""
        if isinstance(msg, dict) and msg.get("role") in ROLES and isinstance(msg.get("content"), str):
            return Turn(msg["role"], msg["content"], (container, i), "role", "content")  # fast path: a good message
        where = f"{container}[{i}]"
        if not isinstance(msg, dict):
            raise self.fail(where, f"must be an object {{\"role\": ..., \"content\": ...}}, got {type_name(msg)}", "wrong type")
        if "role" not in msg and "from" in msg:
            raise self.fail(f"{where}.role", "is missing; this message uses ShareGPT keys (from/value): use format sharegpt with a 'conversations' field", "missing field")
        role = self.key(msg, "role", where)
        content = self.key(msg, "content", where)
        if role not in ROLES:
            raise self.fail(f"{where}.role", f"unknown role {role!r}; allowed: {', '.join(ROLES)}", "bad roles")
        return Turn(role, self.string(content, f"{where}.content"), (container, i), "role", "content")


# ---------------------------------------------------------------- helpers


def detect_format(row: dict, columns: dict[str, str] | None = None) -> str | None:
    """The format whose required fields the row has (messages > conversations > alpaca > prompt/completion > text)."""
    if not isinstance(row, dict):
        return None
    data = apply_columns(row, columns)
    for fmt, needed in REQUIRED.items():
        if all(data.get(f) is not None for f in needed):
            return fmt
    return None


def apply_columns(row: dict, columns: dict[str, str] | None) -> dict:
    if not columns or not isinstance(row, dict):
        return row
    data = dict(row)
    for canonical, column in columns.items():
        if column != canonical and column in row:
            data.pop(column)
            data[canonical] = row[column]
    return data


def check_columns(columns: dict[str, str] | None, source: str | Path) -> None:
    if not columns:
        return
    for canonical, column in columns.items():
        if canonical not in KNOWN_FIELDS:
            close = difflib.get_close_matches(str(canonical), KNOWN_FIELDS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(source, None, "columns", f"unknown field {canonical!r} in columns; {hint}known: {', '.join(KNOWN_FIELDS)}")
        if not isinstance(column, str) or not column:
            raise DataError(source, None, "columns", f"columns[{canonical!r}] must be a column name, got {column!r}")
    targets = list(columns.values())
    dupes = sorted({c for c in targets if targets.count(c) > 1})
    if dupes:
        raise DataError(source, None, "columns", f"column {dupes[0]!r} is mapped to more than one field")


def undetected(row: dict, columns: dict[str, str] | None, source: str, line: int) -> RowError:
    """Why no format fits: a likely misspelling, or the fields found and what each format needs."""
    data = apply_columns(row, columns) if isinstance(row, dict) else {}
    fixes = {}
    for k in data:
        close = difflib.get_close_matches(k, KNOWN_FIELDS, n=1, cutoff=0.75) if k not in KNOWN_FIELDS else []
        if close and close[0] not in data:
            fixes[close[0]] = k
    fixed = set(data) | set(fixes)
    for fmt, needed in REQUIRED.items():
        if not all(f in fixed for f in needed):
            continue
        typos = [f for f in needed if f in fixes]
        if typos:
            name = typos[0]
            return RowError(
                source, line, name,
                f"is missing; the row has '{fixes[name]}': did you mean '{name}'? "
                f"Rename it, or map it with columns: {{{name}: {fixes[name]}}} (format {fmt} needs {' + '.join(needed)})",
                "missing field",
            )
        name = next(f for f in needed if data.get(f) is None)
        return RowError(source, line, name, f"is null (format {fmt} needs {' + '.join(needed)})", "missing field")
    hint = " It looks like preference data (chosen/rejected), which SFT cannot train on." if {"chosen", "rejected"} <= set(data) else ""
    return RowError(
        source, line, None,
        f"cannot tell the data format: the row has fields {field_names(data)}; {NEEDS}. "
        f"Set the format, or map your columns, e.g. columns: {{instruction: question, output: answer}}.{hint}",
        "unknown format",
    )


def with_mismatch_hint(err: RowError, row: object, columns, chosen: str | None, fmt: str, first_line: int) -> RowError:
    """A row that fails but fits another format: say so (mixed formats in one file)."""
    if chosen is None or not isinstance(row, dict):
        return err
    other = detect_format(row, columns)
    if other is None or other == chosen:
        return err
    origin = f"detected from line {first_line}" if fmt == "auto" else "as configured"
    p = err.problem
    message = f"{p.message}; this row looks like format {other}, but the file's format is {chosen} ({origin}): keep one format per file"
    return RowError(p.file, p.line, p.field, message, "format mismatch")


def unknown_format(fmt: str) -> str:
    close = difflib.get_close_matches(str(fmt), FORMATS, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown format {fmt!r}; {hint}choose auto or one of {', '.join(FORMATS)}"


def field_names(d: dict) -> str:
    keys = [str(k) for k in d]
    shown = ", ".join(repr(k) for k in keys[:12])
    return (shown + f", ... ({len(keys)} in all)") if len(keys) > 12 else (shown or "no fields")


def type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", tuple: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
