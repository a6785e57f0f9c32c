"""Preference data: pairs (prompt, chosen, rejected), ranked lists, and KTO's unpaired labelled rows.

Accepted rows (one format per file; `format: auto` detects it from the fields):

- pairs: {prompt, chosen, rejected} with strings, or TRL's conversational form (prompt = list of messages,
  chosen/rejected = [{role: assistant, content}]); or {chosen, rejected} as two full conversations that
  share every turn but the last assistant one; or {prompt, responses: [best, ..., worst]} (also `ranked`),
  which expands to every (better, worse) pair. An optional numeric `margin` is kept for the reward model.
- unpaired (KTO): {prompt, completion, label} with label true (desirable) or false (undesirable).

Rendering uses the SFT template machinery: prompt + response is rendered and tokenised ONCE as a Record
(`templates.render`, last assistant turn trained), and the prompt's own rendering (`render_prompt`) must be a
token prefix of it, so chosen and rejected provably share the prompt tokens (ALGORITHMS.md trap 1).
Rows with chosen == rejected are skipped and counted; other problems are `DataError`s naming file, line, field.
`load_preference_set` tokenises a set of files once into the data cache (data/cache.py) when data.cache is on.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.data.formats import Record, to_record
from tunesmith.data.readers import RowError, read_rows
from tunesmith.data.templates import BoundaryError, Example, render, render_prompt
from tunesmith.errors import DataError, InputProblem, SkipReport

PREFERENCE_FORMATS = ("preference", "unpaired")
RANKED_FIELDS = ("responses", "ranked")


@dataclass
class PairExample:
    """A tokenised preference pair: both rows start with the same `prompt_len` prompt tokens."""

    chosen: Example
    rejected: Example
    prompt_len: int
    margin: float = 0.0


@dataclass
class UnpairedExample:
    """A tokenised KTO row: `example.labels` mark the completion; `label` True = desirable."""

    example: Example
    prompt_len: int
    label: bool


@dataclass
class _Pair:
    prompt: list[dict]
    chosen: dict  # one assistant message
    rejected: dict
    margin: float
    source: str
    line: int


def detect_preference_format(row: dict) -> str | None:
    """'preference' (chosen/rejected or ranked responses), 'unpaired' (completion + label), or None."""
    if not isinstance(row, dict):
        return None
    if "chosen" in row or "rejected" in row or any(f in row for f in RANKED_FIELDS):
        return "preference"
    if "label" in row and "completion" in row:
        return "unpaired"
    return None


# ---------------------------------------------------------------- parsing rows


def _fail(source: str, line: int, field: str | None, message: str, reason: str = "missing field") -> RowError:
    return RowError(source, line, field, message, reason)


def _require(row: dict, name: str, source: str, line: int, fmt: str):
    if row.get(name) is None:
        needs = "prompt + chosen + rejected (or chosen + rejected conversations, or prompt + responses)" if fmt == "preference" else "prompt + completion + label"
        raise _fail(source, line, name, f"is {'null' if name in row else 'missing'}; format {fmt} needs {needs}; the row has: {', '.join(map(repr, row)) or 'no fields'}")
    return row[name]


def _as_messages(value, name: str, role: str, source: str, line: int) -> list[dict]:
    """A string becomes one message of `role`; a list must hold {role, content} messages (checked later)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, (list, tuple)):
        for i, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise _fail(source, line, f"{name}[{i}]", 'must be a message {"role": ..., "content": "..."}', "wrong type")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise _fail(source, line, name, f"must be a string or a list of messages, got {type(value).__name__}", "wrong type")


def _checked(prompt: list[dict], answer: dict, name: str, source: str, line: int, system: str | None) -> list[dict]:
    """Validate prompt + answer as one conversation with the SFT rules (roles, alternation, non-empty answer)."""
    try:
        return to_record({"messages": prompt + [answer]}, "messages", source, line, system_prompt=system).messages
    except RowError as err:
        raise _fail(source, line, f"{name}: {err.problem.field}", err.problem.message, err.reason) from None


def _response(messages: list[dict], prompt: list[dict], name: str, source: str, line: int) -> dict:
    """The single assistant answer: strip a repeated prompt prefix (full conversations), then expect one message."""
    if len(messages) > len(prompt) and messages[: len(prompt)] == prompt:
        messages = messages[len(prompt):]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise _fail(source, line, name, "must be one assistant answer (a string, or [{role: assistant, content}] after the prompt turns)", "bad roles")
    return messages[0]


def _split_conversations(row: dict, source: str, line: int) -> tuple[list[dict], dict, dict]:
    """chosen/rejected as full conversations: the prompt is every turn but the last, and must be the same."""
    chosen = _as_messages(row["chosen"], "chosen", "assistant", source, line)
    rejected = _as_messages(row["rejected"], "rejected", "assistant", source, line)
    if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
        raise _fail(source, line, "prompt", "is missing: with chosen/rejected as plain strings the row needs a prompt")
    if chosen[:-1] != rejected[:-1]:
        k = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)) - 1)
        raise _fail(source, line, f"rejected[{k}]", f"prompt mismatch: chosen and rejected must share every turn but the last; they differ at message {k}", "prompt mismatch")
    return chosen[:-1], chosen[-1], rejected[-1]


def _margin(row: dict, source: str, line: int) -> float:
    value = row.get("margin", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, line, "margin", f"must be a number, got {value!r}", "wrong type")
    return float(value)


def parse_pairs(row: dict, source: str, line: int, system: str | None = None) -> list[_Pair]:
    """The preference pairs of one row (a ranked row gives n*(n-1)/2 of them); raises RowError."""
    ranked = next((f for f in RANKED_FIELDS if f in row), None)
    if ranked is not None:
        prompt = _as_messages(_require(row, "prompt", source, line, "preference"), "prompt", "user", source, line)
        items = row[ranked]
        if not isinstance(items, (list, tuple)) or len(items) < 2:
            raise _fail(source, line, ranked, "must be a list of at least two responses, best first", "wrong type")
        answers = [_response(_as_messages(r, f"{ranked}[{i}]", "assistant", source, line), prompt, f"{ranked}[{i}]", source, line) for i, r in enumerate(items)]
        return [_Pair(prompt, answers[i], answers[j], 0.0, source, line) for i in range(len(answers)) for j in range(i + 1, len(answers))]
    for name in ("chosen", "rejected"):
        _require(row, name, source, line, "preference")
    if row.get("prompt") is None:
        prompt, chosen, rejected = _split_conversations(row, source, line)
    else:
        prompt = _as_messages(row["prompt"], "prompt", "user", source, line)
        chosen = _response(_as_messages(row["chosen"], "chosen", "assistant", source, line), prompt, "chosen", source, line)
        rejected = _response(_as_messages(row["rejected"], "rejected", "assistant", source, line), prompt, "rejected", source, line)
    return [_Pair(prompt, chosen, rejected, _margin(row, source, line), source, line)]


def _label(row: dict, source: str, line: int) -> bool:
    value = _require(row, "label", source, line, "unpaired")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # CSV cells
        return value.strip().lower() == "true"
    raise _fail(source, line, "label", f"must be true (desirable) or false (undesirable), got {value!r}", "wrong type")


# ---------------------------------------------------------------- rendering


def _render_turns(messages: list[dict], tokenizer, source: str, line: int, max_length: int, overlong: str) -> tuple[Example | None, int]:
    """Tokenise prompt + answer once; check that the prompt's own tokens are an exact prefix."""
    example = render(Record(messages=messages, source=source, line=line), tokenizer, "last_assistant", max_length, overlong)
    prompt_ids = render_prompt(messages[:-1], tokenizer)
    if example is None:
        return None, len(prompt_ids)
    first = next(k for k, label in enumerate(example.labels) if label != -100)
    if example.input_ids[: len(prompt_ids)] != prompt_ids[: len(example.input_ids)] or first < len(prompt_ids):
        raise BoundaryError(source, line, "prompt", "the prompt's tokens are not a prefix of prompt + answer tokens (the template or tokenizer merges across the boundary)")
    return example, len(prompt_ids)


def render_pair(pair: _Pair, tokenizer, system: str | None, max_length: int, overlong: str) -> PairExample | None:
    """Tokenised pair (None when too long and overlong == 'drop'); chosen and rejected share the prompt tokens."""
    chosen_msgs = _checked(pair.prompt, pair.chosen, "chosen", pair.source, pair.line, system)
    rejected_msgs = _checked(pair.prompt, pair.rejected, "rejected", pair.source, pair.line, system)
    chosen, n = _render_turns(chosen_msgs, tokenizer, pair.source, pair.line, max_length, overlong)
    rejected, m = _render_turns(rejected_msgs, tokenizer, pair.source, pair.line, max_length, overlong)
    if chosen is None or rejected is None:
        return None
    if n != m or chosen.input_ids[:n] != rejected.input_ids[:n]:
        raise BoundaryError(pair.source, pair.line, "prompt", "chosen and rejected do not start with the same prompt tokens")
    return PairExample(chosen, rejected, n, pair.margin)


def rejected_to_divergence(pair: PairExample) -> PairExample:
    """The pair with the rejected answer trained only up to its first token that differs from the chosen one.

    Tokens both answers share cancel in the DPO log-ratio anyway; the rejected tokens AFTER the first
    difference are mostly the chosen answer's own tokens again (closing fields, punctuation, end of turn) in a
    slightly different context, and pushing them down also lowers the chosen answer (Pal et al. 2024, Smaug,
    Sec. 3: DPO on low-edit-distance pairs). Keeping only the divergent token is the token-level analogue of
    Step-DPO's first wrong step (Lai et al. 2024). A rejected answer that is a prefix of the chosen one keeps its
    end-of-turn token; chosen itself is untouched. Pairs that never differ in their trained tokens keep all.
    """
    c = [t for t, label in zip(pair.chosen.input_ids, pair.chosen.labels) if label != -100]
    positions = [k for k, label in enumerate(pair.rejected.labels) if label != -100]
    first = next((i for i, k in enumerate(positions) if i >= len(c) or pair.rejected.input_ids[k] != c[i]), None)
    if first is None or first == len(positions) - 1:
        return pair
    keep = set(positions[: first + 1])
    labels = [label if k in keep or label == -100 else -100 for k, label in enumerate(pair.rejected.labels)]
    rejected = Example(pair.rejected.input_ids, labels, pair.rejected.source, pair.rejected.line, pair.rejected.truncated)
    return PairExample(pair.chosen, rejected, pair.prompt_len, pair.margin)


# ---------------------------------------------------------------- files


def _check_format(path: str, fmt: str, kind: str) -> None:
    expected = "preference" if kind == "pairwise" else "unpaired"
    if fmt not in ("auto", expected):
        raise DataError(path, None, "format", f"objective needs {expected} data (format auto or {expected}), got format {fmt!r}")


def _columns(row: dict, columns: dict[str, str] | None) -> dict:
    if not columns:
        return row
    data = dict(row)
    for canonical, column in columns.items():
        if column in row and column != canonical:
            data[canonical] = data.pop(column)
    return data


def load_preference_examples(
    path: str, tokenizer, kind: str, *, fmt: str = "auto", columns: dict[str, str] | None = None,
    system_prompt: str | None = None, max_length: int = 1024, overlong: str = "truncate",
    on_error: str = "stop", report: SkipReport | None = None,
) -> list[PairExample] | list[UnpairedExample]:
    """Read, check and tokenise a preference file (kind 'pairwise') or a KTO file (kind 'unpaired').

    Every skipped row or pair is counted in `report` by reason (chosen == rejected, too long, ...).
    """
    report = report if report is not None else SkipReport()
    _check_format(str(path), fmt, kind)
    out: list = []
    for line, raw in read_rows(path, report, on_error):
        row = _columns(raw, columns)
        try:
            before = len(out)
            if kind == "pairwise":
                _add_pairs(row, str(path), line, tokenizer, system_prompt, max_length, overlong, out, report)
            else:
                _add_unpaired(row, str(path), line, tokenizer, system_prompt, max_length, overlong, out, report)
            report.kept += len(out) > before
        except DataError as err:
            if on_error == "stop":
                raise
            report.skip(err.problem, getattr(err, "reason", "template error"))
    if not out:
        raise DataError(path, None, None, f"no usable {'preference pairs' if kind == 'pairwise' else 'rows'} ({report.summary()})")
    return out


def _add_pairs(row: dict, source: str, line: int, tokenizer, system, max_length: int, overlong: str, out: list, report: SkipReport) -> None:
    if detect_preference_format(row) != "preference":
        raise _fail(source, line, "chosen", f"is missing; preference rows need prompt + chosen + rejected (or prompt + responses); the row has: {', '.join(map(repr, row))}")
    for pair in parse_pairs(row, source, line, system):
        if pair.chosen["content"].strip() == pair.rejected["content"].strip():
            report.skip(InputProblem(source, line, "rejected", "is identical to chosen: nothing to prefer"), "chosen == rejected")
            continue
        example = render_pair(pair, tokenizer, system, max_length, overlong)
        if example is None:
            report.skip(InputProblem(source, line, None, f"longer than max_length={max_length}"), "too long")
            continue
        out.append(example)


def _add_unpaired(row: dict, source: str, line: int, tokenizer, system, max_length: int, overlong: str, out: list, report: SkipReport) -> None:
    prompt = _as_messages(_require(row, "prompt", source, line, "unpaired"), "prompt", "user", source, line)
    completion = _as_messages(_require(row, "completion", source, line, "unpaired"), "completion", "assistant", source, line)
    label = _label(row, source, line)
    messages = _checked(prompt, _response(completion, prompt, "completion", source, line), "completion", source, line, system)
    example, n = _render_turns(messages, tokenizer, source, line, max_length, overlong)
    if example is None:
        report.skip(InputProblem(source, line, None, f"longer than max_length={max_length}"), "too long")
        return
    out.append(UnpairedExample(example, n, label))


# ---------------------------------------------------------------- cached sets

PREFERENCE_FIELDS = ("max_length", "overlong", "system_prompt", "on_error", "template")  # what changes the items


def _pack_pairs(pairs: list[PairExample]) -> tuple[list[Example], list]:
    return [e for p in pairs for e in (p.chosen, p.rejected)], [[p.prompt_len, p.margin] for p in pairs]


def _unpack_pairs(rows: list[Example], values: list) -> list[PairExample]:
    if not isinstance(values, list) or len(rows) != 2 * len(values):
        raise ValueError("entry does not hold preference pairs")
    return [PairExample(rows[2 * i], rows[2 * i + 1], int(n), float(m)) for i, (n, m) in enumerate(values)]


def _pack_unpaired(items: list[UnpairedExample]) -> tuple[list[Example], list]:
    return [r.example for r in items], [[r.prompt_len, r.label] for r in items]


def _unpack_unpaired(rows: list[Example], values: list) -> list[UnpairedExample]:
    if not isinstance(values, list) or len(rows) != len(values) or any(not isinstance(v[1], bool) for v in values):
        raise ValueError("entry does not hold unpaired rows")
    return [UnpairedExample(e, int(n), label) for e, (n, label) in zip(rows, values)]


def load_preference_set(sources: list, tokenizer, kind: str, data_cfg, report: SkipReport) -> list:
    """Pairs (kind 'pairwise') or KTO rows ('unpaired') of every source, in file order, tokenised once into
    the data cache when `data_cfg.cache` is on; skips are counted into `report`, identically on a cache hit."""
    from tunesmith.data.dataset import DataReport

    def build() -> tuple[list, DataReport]:
        local, out = DataReport(), []
        for s in sources:
            out += load_preference_examples(
                s.path, tokenizer, kind, fmt=s.format, columns=s.columns or None, system_prompt=data_cfg.system_prompt,
                max_length=data_cfg.max_length, overlong=data_cfg.overlong, on_error=data_cfg.on_error, report=local)
        return out, local

    from tunesmith.data.cache import Codec, cached_build

    pack, unpack = (_pack_pairs, _unpack_pairs) if kind == "pairwise" else (_pack_unpaired, _unpack_unpaired)
    items, local = cached_build(sources, tokenizer, data_cfg, build, Codec(f"preference-{kind}", pack, unpack, PREFERENCE_FIELDS))
    report.merge(local)
    return items
