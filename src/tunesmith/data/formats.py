"""Turn rows of the common SFT data formats into `Record`s (a checked list of chat messages, or plain text).

Formats follow LLaMA-Factory / TRL conventions:

- alpaca: instruction, input (optional), output; optional system and history ([[user, assistant], ...])
- sharegpt: conversations = [{from, value}, ...] (human/user, gpt/assistant/model, system); optional system
- messages: messages = [{role, content}, ...] with roles system/user/assistant (OpenAI style)
- prompt_completion: prompt, completion (strings, or lists of messages as in TRL's conversational form)
- text: text (continued pre-training; no roles)

Every problem is a `DataError` naming the file, the line and the field (e.g. `messages[3].content`); the
field access and error wording live in format_fields.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.data.format_fields import (FORMATS, KNOWN_FIELDS, OPTIONAL, REQUIRED, ROLES, SHAREGPT_ROLES, Row,
                                          Turn, apply_columns, check_columns, detect_format, type_name, undetected,
                                          unknown_format, with_mismatch_hint)
from tunesmith.data.readers import ON_ERROR, RowError, read_rows
from tunesmith.errors import DataError, SkipReport

__all__ = ["FORMATS", "KNOWN_FIELDS", "OPTIONAL", "REQUIRED", "ROLES", "SHAREGPT_ROLES", "Record", "detect_format",
           "load_records", "to_record"]


@dataclass
class Record:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]; empty for text records
    text: str | None = None  # plain text for continued pre-training (format "text")
    source: str = ""  # file path
    line: int = 0  # 1-based line (JSONL) or row number


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
        raise DataError(source, None, "format", unknown_format(fmt))
    check_columns(columns, source)
    if not isinstance(row, dict):
        raise RowError(source, line, None, f"row is {type_name(row)}, expected an object", "not an object")
    r = Row(apply_columns(row, columns), fmt, str(source), line, dict(columns or {}))
    if fmt == "text":
        text = r.string(r.require("text"), "text")
        if not text.strip():
            raise r.fail("text", "is empty", "empty text")
        return Record(messages=[], text=text, source=str(source), line=line)
    turns = _BUILDERS[fmt](r)
    if system_prompt and not (turns and turns[0].role == "system"):
        turns.insert(0, Turn("system", system_prompt, "system_prompt"))
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
        raise DataError(path, None, "format", unknown_format(fmt))
    if on_error not in ON_ERROR:
        raise DataError(path, None, "on_error", f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    check_columns(columns, path)
    source, skip = str(path), on_error == "skip"
    chosen, first_line = (None, 0) if fmt == "auto" else (fmt, 0)
    records: list[Record] = []
    skipped_before, examples_before = report.skipped, len(report.examples)
    for line, row in read_rows(path, report, on_error):
        try:
            if chosen is None:
                chosen, first_line = detect_format(row, columns), line
                if chosen is None:
                    raise undetected(row, columns, source, line)
            records.append(to_record(row, chosen, source, line, columns, system_prompt))
        except RowError as err:
            err = with_mismatch_hint(err, row, columns, chosen, fmt, first_line)
            if not skip:
                raise err from None
            report.skip(err.problem, err.reason)
    report.kept += len(records)
    if not records:
        first = report.examples[examples_before] if len(report.examples) > examples_before else None
        raise DataError(path, None, None, f"no usable rows ({report.skipped - skipped_before} skipped)" + (f"; first problem: {first}" if first else ""))
    return records, report


# ---------------------------------------------------------------- the formats


def _alpaca(r: Row) -> list[Turn]:
    instruction = r.string(r.require("instruction"), "instruction")
    output = r.string(r.require("output"), "output")
    extra = r.optional_string("input")
    system = r.optional_string("system")
    turns = [Turn("system", system, "system")] if system else []
    history = r.data.get("history")
    for i, pair in enumerate(r.as_list(history, "history") if history is not None else []):
        where = f"history[{i}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            got = f"a list of {len(pair)}" if isinstance(pair, (list, tuple)) else type_name(pair)
            raise r.fail(where, f"must be a [user, assistant] pair, got {got}", "wrong type")
        turns.append(Turn("user", r.string(pair[0], f"{where}[0]"), f"{where}[0]"))
        turns.append(Turn("assistant", r.string(pair[1], f"{where}[1]"), f"{where}[1]"))
    prompt = "\n\n".join(p for p in (instruction, extra) if p and p.strip()) or instruction
    turns.append(Turn("user", prompt, "instruction"))
    turns.append(Turn("assistant", output, "output"))
    return turns


def _sharegpt(r: Row) -> list[Turn]:
    turns = []
    for i, turn in enumerate(r.as_list(r.require("conversations"), "conversations")):
        if isinstance(turn, dict) and isinstance(turn.get("value"), str):  # fast path: a good {from, value} turn
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is not None:
                turns.append(Turn(role, turn["value"], ("conversations", i), "from", "value"))
                continue
        turns.append(_sharegpt_turn(r, turn, i))
    system = r.optional_string("system")
    if system and turns and turns[0].role == "system":
        if turns[0].content != system:
            raise r.fail("system", "differs from the system turn in conversations; keep one", "bad roles")
    elif system:
        turns.insert(0, Turn("system", system, "system"))
    return turns


def _sharegpt_turn(r: Row, turn: object, i: int) -> Turn:
    """The careful path for one conversations item: {from, value} or {role, content}, roles in any case."""
    where = f"conversations[{i}]"
    if not isinstance(turn, dict):
        raise r.fail(where, f"must be an object {{\"from\": ..., \"value\": ...}}, got {type_name(turn)}", "wrong type")
    role_key, content_key = ("role", "content") if "from" not in turn and "role" in turn else ("from", "value")
    raw = r.key(turn, role_key, where)
    role = SHAREGPT_ROLES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        raise r.fail(f"{where}.{role_key}", f"unknown role {raw!r}; allowed: {', '.join(SHAREGPT_ROLES)}", "bad roles")
    content = r.string(r.key(turn, content_key, where), f"{where}.{content_key}")
    return Turn(role, content, ("conversations", i), role_key, content_key)


def _messages(r: Row) -> list[Turn]:
    return [r.message(m, "messages", i) for i, m in enumerate(r.as_list(r.require("messages"), "messages"))]


def _prompt_completion(r: Row) -> list[Turn]:
    turns = []
    for name, role in (("prompt", "user"), ("completion", "assistant")):
        value = r.require(name)
        if isinstance(value, str):
            turns.append(Turn(role, value, name))
        elif isinstance(value, (list, tuple)):  # TRL conversational prompt-completion
            turns.extend(r.message(m, name, i) for i, m in enumerate(value))
        else:
            raise r.fail(name, f"must be a string or a list of messages, got {type_name(value)}", "wrong type")
    return turns


_BUILDERS: dict[str, Callable[[Row], list[Turn]]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "prompt_completion": _prompt_completion,
}


def _check_turns(r: Row, turns: list[Turn]) -> None:
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
