"""Turn rows of the common SFT data formats into `Record`s (a checked list of chat messages, or plain text).

Formats follow LLaMA-Factory / TRL conventions:

- alpaca: instruction, input (optional), output; optional system and history ([[user, assistant], ...])
- sharegpt: conversations = [{from, value}, ...] (human/user, gpt/assistant/model, system); optional system
- messages: messages = [{role, content}, ...] with roles system/user/assistant (OpenAI style)
- prompt_completion: prompt, completion (strings, or lists of messages as in TRL's conversational form)
- text: text (continued pre-training; no roles)

Every problem is a `DataError` naming the file, the line and the field (e.g. `messages[3].content`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.readers import ON_ERROR, RowError, read_rows
from tunesmith.errors import DataError, SkipReport


@dataclass
class Record:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]; empty for text records
    text: str | None = None  # plain text for continued pre-training (format "text")
    source: str = ""  # file path
    line: int = 0  # 1-based line (JSONL) or row number


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
_NEEDS = "; ".join(f"{fmt} needs {' + '.join(REQUIRED[fmt])}" for fmt in REQUIRED)
_LIST_FIELDS = ("messages", "conversations", "history")  # CSV cells may hold these as JSON text


@dataclass(slots=True)
class _Turn:
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
class _Row:
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
            msg += f"; the row has: {_names(self.data)}"
        return self.fail(name, msg, "missing field")

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {_type_name(value)}", "wrong type")
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
            raise self.fail(where, f"must be a list, got {_type_name(value)}", "wrong type")
        return list(value)

    def key(self, obj: dict, name: str, where: str):
        """obj[name] for a nested object (a message), with a suggestion when the key is misspelled."""
        if name not in obj:
            close = difflib.get_close_matches(name, [k for k in obj if isinstance(k, str)], n=1, cutoff=0.6)
            hint = f"; it has '{close[0]}': did you mean '{name}'?" if close else f"; it has: {_names(obj)}"
            raise self.fail(f"{where}.{name}", f"is missing{hint}", "missing field")
        return obj[name]

    def message(self, msg: object, container: str, i: int) -> _Turn:
        """An OpenAI-style {role, content} message; roles system/user/assistant only."""
        if isinstance(msg, dict) and msg.get("role") in ROLES and isinstance(msg.get("content"), str):
            return _Turn(msg["role"], msg["content"], (container, i), "role", "content")  # fast path: a good message
        where = f"{container}[{i}]"
        if not isinstance(msg, dict):
            raise self.fail(where, f"must be an object {{\"role\": ..., \"content\": ...}}, got {_type_name(msg)}", "wrong type")
        if "role" not in msg and "from" in msg:
            raise self.fail(f"{where}.role", "is missing; this message uses ShareGPT keys (from/value): use format sharegpt with a 'conversations' field", "missing field")
        role = self.key(msg, "role", where)
        content = self.key(msg, "content", where)
        if role not in ROLES:
            raise self.fail(f"{where}.role", f"unknown role {role!r}; allowed: {', '.join(ROLES)}", "bad roles")
        return _Turn(role, self.string(content, f"{where}.content"), (container, i), "role", "content")


def detect_format(row: dict, columns: dict[str, str] | None = None) -> str | None:
    """The format whose required fields the row has (messages > conversations > alpaca > prompt/completion > text)."""
    if not isinstance(row, dict):
        return None
    data = _apply_columns(row, columns)
    for fmt, needed in REQUIRED.items():
        if all(data.get(f) is not None for f in needed):
            return fmt
    return None


def to_record(
    row: dict,
    fmt: str,
    source: str,
    line: int,
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
) -> Record:
    """Parse and check one row of the given format; raises DataError (a RowError with a `.reason`)."""
    if fmt not in FORMATS:
        raise DataError(source, None, "format", _unknown_format(fmt))
    _check_columns(columns, source)
    if not isinstance(row, dict):
        raise RowError(source, line, None, f"row is {_type_name(row)}, expected an object", "not an object")
    r = _Row(_apply_columns(row, columns), fmt, str(source), line, dict(columns or {}))
    if fmt == "text":
        text = r.string(r.require("text"), "text")
        if not text.strip():
            raise r.fail("text", "is empty", "empty text")
        return Record(messages=[], text=text, source=str(source), line=line)
    turns = _BUILDERS[fmt](r)
    if system_prompt and not (turns and turns[0].role == "system"):
        turns.insert(0, _Turn("system", system_prompt, "system_prompt"))
    _check_turns(r, turns)
    return Record(messages=[{"role": t.role, "content": t.content} for t in turns], source=str(source), line=line)


def load_records(
    path: str,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
    on_error: str = "stop",
    report: SkipReport | None = None,
) -> tuple[list[Record], SkipReport]:
    """Read a file and parse every row. "auto" detects the format from the first row; later rows must fit it.

    on_error="stop" raises the first problem; "skip" counts each bad row in the report (by reason) and
    goes on. A file where no row is usable raises even when skipping.
    """
    report = report if report is not None else SkipReport()
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(path, None, "format", _unknown_format(fmt))
    if on_error not in ON_ERROR:
        raise DataError(path, None, "on_error", f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    _check_columns(columns, path)
    source, skip = str(path), on_error == "skip"
    chosen, first_line = (None, 0) if fmt == "auto" else (fmt, 0)
    records: list[Record] = []
    skipped_before, examples_before = report.skipped, len(report.examples)
    for line, row in read_rows(path, report, on_error):
        try:
            if chosen is None:
                chosen, first_line = detect_format(row, columns), line
                if chosen is None:
                    raise _undetected(row, columns, source, line)
            records.append(to_record(row, chosen, source, line, columns, system_prompt))
        except RowError as err:
            err = _with_mismatch_hint(err, row, columns, chosen, fmt, first_line)
            if not skip:
                raise err from None
            report.skip(err.problem, err.reason)
    report.kept += len(records)
    if not records:
        first = report.examples[examples_before] if len(report.examples) > examples_before else None
        raise DataError(path, None, None, f"no usable rows ({report.skipped - skipped_before} skipped)" + (f"; first problem: {first}" if first else ""))
    return records, report


# ---------------------------------------------------------------- the formats


def _alpaca(r: _Row) -> list[_Turn]:
    instruction = r.string(r.require("instruction"), "instruction")
    output = r.string(r.require("output"), "output")
    extra = r.optional_string("input")
    system = r.optional_string("system")
    turns = [_Turn("system", system, "system")] if system else []
    history = r.data.get("history")
    for i, pair in enumerate(r.as_list(history, "history") if history is not None else []):
        where = f"history[{i}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            got = f"a list of {len(pair)}" if isinstance(pair, (list, tuple)) else _type_name(pair)
            raise r.fail(where, f"must be a [user, assistant] pair, got {got}", "wrong type")
        turns.append(_Turn("user", r.string(pair[0], f"{where}[0]"), f"{where}[0]"))
        turns.append(_Turn("assistant", r.string(pair[1], f"{where}[1]"), f"{where}[1]"))
    prompt = "\n\n".join(p for p in (instruction, extra) if p and p.strip()) or instruction
    turns.append(_Turn("user", prompt, "instruction"))
    turns.append(_Turn("assistant", output, "output"))
    return turns


def _sharegpt(r: _Row) -> list[_Turn]:
    turns = []
    for i, turn in enumerate(r.as_list(r.require("conversations"), "conversations")):
        if isinstance(turn, dict) and isinstance(turn.get("value"), str):  # fast path: a good {from, value} turn
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is not None:
                turns.append(_Turn(role, turn["value"], ("conversations", i), "from", "value"))
                continue
        turns.append(_sharegpt_turn(r, turn, i))
    system = r.optional_string("system")
    if system and turns and turns[0].role == "system":
        if turns[0].content != system:
            raise r.fail("system", "differs from the system turn in conversations; keep one", "bad roles")
    elif system:
        turns.insert(0, _Turn("system", system, "system"))
    return turns


def _sharegpt_turn(r: _Row, turn: object, i: int) -> _Turn:
    """The careful path for one conversations item: {from, value} or {role, content}, roles in any case."""
    where = f"conversations[{i}]"
    if not isinstance(turn, dict):
        raise r.fail(where, f"must be an object {{\"from\": ..., \"value\": ...}}, got {_type_name(turn)}", "wrong type")
    role_key, content_key = ("role", "content") if "from" not in turn and "role" in turn else ("from", "value")
    raw = r.key(turn, role_key, where)
    role = SHAREGPT_ROLES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        raise r.fail(f"{where}.{role_key}", f"unknown role {raw!r}; allowed: {', '.join(SHAREGPT_ROLES)}", "bad roles")
    content = r.string(r.key(turn, content_key, where), f"{where}.{content_key}")
    return _Turn(role, content, ("conversations", i), role_key, content_key)


def _messages(r: _Row) -> list[_Turn]:
    return [r.message(m, "messages", i) for i, m in enumerate(r.as_list(r.require("messages"), "messages"))]


def _prompt_completion(r: _Row) -> list[_Turn]:
    turns = []
    for name, role in (("prompt", "user"), ("completion", "assistant")):
        value = r.require(name)
        if isinstance(value, str):
            turns.append(_Turn(role, value, name))
        elif isinstance(value, (list, tuple)):  # TRL conversational prompt-completion
            turns.extend(r.message(m, name, i) for i, m in enumerate(value))
        else:
            raise r.fail(name, f"must be a string or a list of messages, got {_type_name(value)}", "wrong type")
    return turns


_BUILDERS: dict[str, Callable[[_Row], list[_Turn]]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "prompt_completion": _prompt_completion,
}


def _check_turns(r: _Row, turns: list[_Turn]) -> None:
    """Optional system first, then user/assistant alternating, ending on a non-empty assistant turn."""
    container = {"sharegpt": "conversations", "messages": "messages"}.get(r.fmt, r.fmt)
    if not any(t.role != "system" for t in turns):
        raise r.fail(container, "conversation has no user or assistant messages", "missing field")
    start = 1 if turns[0].role == "system" else 0
    for i, t in enumerate(turns):
        if t.role == "system":
            if i != 0:
                raise r.fail(t.role_field, f"a system message may only come first, found one at position {i}", "bad roles")
            continue
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if t.role != expected:
            raise r.fail(
                t.role_field,
                f"expected {'a user' if expected == 'user' else 'an assistant'} turn, got {t.role}: after an optional system message, turns must alternate user, assistant, user, ...",
                "bad roles",
            )
    if turns[-1].role != "assistant":
        raise r.fail(turns[-1].role_field, "conversation ends on a user turn: there is no assistant reply to learn from; add one or drop the turn", "bad roles")
    for t in turns:
        if t.role == "assistant" and not t.content.strip():
            raise r.fail(t.content_field, "is an empty assistant response: nothing to learn", "empty response")


# ---------------------------------------------------------------- helpers


def _apply_columns(row: dict, columns: dict[str, str] | None) -> dict:
    if not columns or not isinstance(row, dict):
        return row
    data = dict(row)
    for canonical, column in columns.items():
        if column != canonical and column in row:
            data.pop(column)
            data[canonical] = row[column]
    return data


def _check_columns(columns: dict[str, str] | None, source: str | Path) -> None:
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


def _undetected(row: dict, columns: dict[str, str] | None, source: str, line: int) -> RowError:
    """Why no format fits: a likely misspelling, or the fields found and what each format needs."""
    data = _apply_columns(row, columns) if isinstance(row, dict) else {}
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
        f"cannot tell the data format: the row has fields {_names(data)}; {_NEEDS}. "
        f"Set the format, or map your columns, e.g. columns: {{instruction: question, output: answer}}.{hint}",
        "unknown format",
    )


def _with_mismatch_hint(err: RowError, row: object, columns, chosen: str | None, fmt: str, first_line: int) -> RowError:
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


def _unknown_format(fmt: str) -> str:
    close = difflib.get_close_matches(str(fmt), FORMATS, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown format {fmt!r}; {hint}choose auto or one of {', '.join(FORMATS)}"


def _names(d: dict) -> str:
    keys = [str(k) for k in d]
    shown = ", ".join(repr(k) for k in keys[:12])
    return (shown + f", ... ({len(keys)} in all)") if len(keys) > 12 else (shown or "no fields")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", tuple: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
