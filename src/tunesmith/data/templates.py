"""Chat templates and loss masks: render a record once, tokenise it once, mask by character offsets.

Traps handled (ALGORITHMS.md 1-3, 6): prompt and answer are never tokenised apart (the full text is
tokenised once and answer spans are located by character offsets), BOS is never doubled, an empty
mask is refused, and inference (`render_prompt`, `stop_token_ids`) uses the very same template.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.errors import DataError, TunesmithError

if TYPE_CHECKING:
    from tunesmith.data.formats import Record

IGNORE = -100
BUILTIN_TEMPLATES = ("chatml", "alpaca")
TRAIN_ON = ("all_assistant", "last_assistant", "everything")
# End-of-turn markers of common chat templates; a stop token when the vocab and the template have it.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>", "<|endoftext|>")


@dataclass
class Example:
    """One tokenised training row: labels are input_ids where trained, -100 elsewhere."""

    input_ids: list[int]
    labels: list[int]
    source: str
    line: int
    truncated: bool


class EmptyMaskError(DataError):
    """A row with no trained token (e.g. truncation cut every answer token)."""


class BoundaryError(DataError):
    """A token straddles the edge of an answer: the mask cannot be placed on token boundaries."""


def builtin_template(name: str) -> str:
    """Text of a built-in Jinja template shipped in tunesmith/templates/."""
    return resources.files("tunesmith").joinpath(f"templates/{name}.jinja").read_text(encoding="utf-8")


def resolve_template(tokenizer, name: str) -> None:
    """Set `tokenizer.chat_template` from 'auto', 'tokenizer', 'chatml', 'alpaca' or a .jinja path."""
    own = tokenizer.chat_template
    if isinstance(own, dict):  # several named templates: the default one is the chat template
        own = own.get("default")
    if name == "auto":
        tokenizer.chat_template = own if own else builtin_template("chatml")
    elif name == "tokenizer":
        if not own:
            raise TunesmithError(
                "template 'tokenizer' asked for, but this tokenizer has no chat template: "
                "use template: chatml, alpaca, or a path to a .jinja file"
            )
        tokenizer.chat_template = own
    elif name in BUILTIN_TEMPLATES:
        tokenizer.chat_template = builtin_template(name)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise TunesmithError(
                f"template '{name}' is not 'auto', 'tokenizer', {', '.join(repr(n) for n in BUILTIN_TEMPLATES)} "
                "or an existing .jinja file"
            )
        tokenizer.chat_template = path.read_text(encoding="utf-8")


def _apply(tokenizer, messages: list[dict], generation_prompt: bool, where: tuple[str, int] = ("", 0)) -> str:
    """The template's text for `messages` (never tokenised here), with template errors made readable."""
    if not tokenizer.chat_template:
        raise TunesmithError("the tokenizer has no chat template: call resolve_template first")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raise_exception(...) or a broken template file
        if where[0]:
            raise DataError(where[0], where[1], "messages", f"the chat template failed: {exc}") from exc
        raise TunesmithError(f"the chat template failed: {exc}") from exc
    if not isinstance(text, str):
        raise TunesmithError("the chat template did not return text")
    return text


def _adds_bos(tokenizer) -> bool:
    """Whether plain tokenisation puts a BOS in front by itself (then rendered text needs one too)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a").input_ids
    return bool(ids) and ids[0] == bos


def _bos_prefix(tokenizer, text: str) -> list[int]:
    """[bos_id] when the tokenizer wants a BOS and the rendered text does not already start with one."""
    if _adds_bos(tokenizer) and not (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        return [tokenizer.bos_token_id]
    return []


def _check_single_bos(tokenizer, ids: list[int], where: tuple[str, int]) -> None:
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise DataError(where[0], where[1], None, "the rendered row starts with a double BOS token (template bug)")


def render_prompt(messages: list[dict], tokenizer) -> list[int]:
    """Token ids of the conversation so far plus the generation prompt, exactly as in training."""
    text = _apply(tokenizer, messages, generation_prompt=True)
    ids = _bos_prefix(tokenizer, text) + tokenizer(text, add_special_tokens=False).input_ids
    _check_single_bos(tokenizer, ids, ("<prompt>", 0))
    return ids


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the template's end-of-turn token(s) that exist in the vocabulary."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN:
        if token in template and token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids


def assistant_spans(record: Record, tokenizer, train_on: str) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans [start, end) of the answers to train on."""
    where = (record.source, record.line)
    messages = record.messages
    full = _apply(tokenizer, messages, generation_prompt=False, where=where)
    if train_on == "everything":
        return full, [(0, len(full))]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last_assistant":
        turns = turns[-1:]
    spans = []
    for i in turns:
        prompt = _apply(tokenizer, messages[:i], generation_prompt=True, where=where)
        upto = _apply(tokenizer, messages[: i + 1], generation_prompt=False, where=where)
        if not (full.startswith(prompt) and full.startswith(upto)):
            raise TunesmithError(
                f"{record.source}:{record.line}: the chat template is not prefix-stable (rendering the "
                "conversation up to a turn does not give a prefix of the whole), so answer tokens cannot be "
                "located: use train_on: everything, or another template (chatml, alpaca, a .jinja file)"
            )
        spans.append((len(prompt), len(upto.rstrip())))
    return full, spans


def _labels_from_offsets(
    ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]], where: tuple[str, int]
) -> list[int]:
    """labels[k] = ids[k] when token k lies inside a span; a token crossing a span edge is an error."""
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        for k, (a, b) in enumerate(offsets):
            if a >= start and b <= end and b > a:
                labels[k] = ids[k]
            elif (a < start < b) or (a < end < b):
                raise BoundaryError(
                    where[0], where[1], "messages",
                    f"a token ({a}-{b}) straddles the edge of an answer ({start}-{end}); "
                    "leading/trailing whitespace in the answer often causes this: strip it, or use train_on: everything",
                )
    return labels


def render(
    record: Record,
    tokenizer,
    train_on: str = "all_assistant",
    max_length: int = 1024,
    overlong: str = "truncate",
) -> Example | None:
    """Tokenise one record with its loss mask; None when it is too long and overlong == 'drop'."""
    if train_on not in TRAIN_ON:
        raise TunesmithError(f"train_on must be one of {', '.join(TRAIN_ON)}, not '{train_on}'")
    where = (record.source, record.line)
    if not record.messages:  # plain text: text + EOS, everything trained
        text = record.text or ""
        bos = _bos_prefix(tokenizer, text)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        body = tokenizer(text, add_special_tokens=False).input_ids + eos
        ids, labels = bos + body, [IGNORE] * len(bos) + list(body)
    else:
        if not getattr(tokenizer, "is_fast", False):
            raise TunesmithError("loss masks need a fast tokenizer (character offsets); this one is a slow tokenizer")
        text, spans = assistant_spans(record, tokenizer, train_on)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        bos = _bos_prefix(tokenizer, text)
        body = _labels_from_offsets(enc.input_ids, enc.offset_mapping, spans, where)
        ids, labels = bos + list(enc.input_ids), [IGNORE] * len(bos) + body
    _check_single_bos(tokenizer, ids, where)
    truncated = len(ids) > max_length
    if truncated:
        if overlong == "drop":
            return None
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        reason = "truncation to max_length cut every answer token" if truncated else "no answer tokens to train on"
        raise EmptyMaskError(record.source, record.line, None, f"no trained tokens: {reason}")
    return Example(ids, labels, record.source, record.line, truncated)
