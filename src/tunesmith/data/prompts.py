"""Prompt-only sets for online RL (PPO/GRPO): {"prompt": str} or {"messages": [...]} rows.

A final assistant turn (e.g. a reference answer, as in the quickstart files) is left out: the policy writes it.
Every other field of the row (e.g. `target`) is kept and handed to reward functions. Prompts are rendered with
the training template and its generation prompt (`templates.render_prompt`), exactly as `generate` does.
Bad rows raise DataError naming file, line and field, or are skipped and counted (data.on_error: skip).
With data.cache on, `load_prompt_sets` renders each set once into the data cache (data/cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import DataError, SkipReport, TunesmithError

PROMPT_FORMATS = ("auto", "prompt", "messages")


@dataclass
class PromptItem:
    """One prompt: its conversation, rendered token ids, and the original row (for reward functions)."""

    messages: list[dict]
    ids: list[int]
    row: dict
    source: str
    line: int


def parse_prompt_row(row: dict, source: str, line: int, system_prompt: str | None = None) -> list[dict]:
    """The conversation to complete; DataError for rows without a usable prompt."""
    from tunesmith.serving.engine import prompt_messages

    messages = prompt_messages(row, source, line)
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def load_prompts(sources, tokenizer, data_cfg, report: SkipReport, max_prompt_len: int) -> list[PromptItem]:
    """PromptItems from every source; prompts longer than `max_prompt_len` tokens are skipped and counted."""
    from tunesmith.data.readers import read_rows
    from tunesmith.data.templates import render_prompt

    items: list[PromptItem] = []
    for s in sources:
        if s.format not in PROMPT_FORMATS:
            raise DataError(s.path, None, "format", f"online RL reads prompt rows; format must be one of {', '.join(PROMPT_FORMATS)}, not '{s.format}'")
        for line, row in read_rows(s.path, report, data_cfg.on_error):
            if s.columns:
                row = {**row, **{key: row[col] for key, col in s.columns.items() if col in row}}
            try:
                messages = parse_prompt_row(row, s.path, line, data_cfg.system_prompt)
            except DataError as err:
                if data_cfg.on_error == "stop":
                    raise
                report.skip(err.problem, "bad prompt row")
                continue
            ids = render_prompt(messages, tokenizer)
            if len(ids) > max_prompt_len:
                report.skip(DataError(s.path, line, None, f"prompt has {len(ids)} tokens; at most {max_prompt_len} fit "
                                      "(data.max_length - rl.max_new_tokens)").problem, "prompt too long")
                continue
            items.append(PromptItem(messages, ids, row, str(s.path), line))
            report.kept += 1
    return items


PROMPT_FIELDS = ("max_length", "system_prompt", "on_error", "template")  # what changes the items (+ the budget)


def _pack_prompts(items: list[PromptItem]) -> tuple[list, list]:
    from tunesmith.data.templates import Example

    return [Example(p.ids, [-100] * len(p.ids), p.source, p.line, False) for p in items], [[p.messages, p.row] for p in items]


def _unpack_prompts(rows: list, values: list) -> list[PromptItem]:
    if not isinstance(values, list) or len(rows) != len(values):
        raise ValueError("entry does not hold prompts")
    return [PromptItem(messages, e.input_ids, row, e.source, e.line) for e, (messages, row) in zip(rows, values)]


def load_prompt_set(sources, tokenizer, data_cfg, report: SkipReport, max_prompt_len: int) -> list[PromptItem]:
    """`load_prompts`, served from the data cache when `data_cfg.cache` is on (skips identical on a hit).
    Rows JSON cannot store exactly (e.g. Parquet timestamps) are not cached, with a warning."""
    from tunesmith.data.dataset import DataReport

    def build() -> tuple[list[PromptItem], DataReport]:
        local = DataReport()
        return load_prompts(sources, tokenizer, data_cfg, local, max_prompt_len), local

    from tunesmith.data.cache import Codec, cached_build

    codec = Codec("prompts", _pack_prompts, _unpack_prompts, PROMPT_FIELDS, (("max_prompt_len", max_prompt_len),))
    items, local = cached_build(sources, tokenizer, data_cfg, build, codec)
    report.merge(local)
    return items


def load_prompt_sets(cfg, tokenizer, report: SkipReport) -> tuple[list[PromptItem], list[PromptItem]]:
    """Train and eval prompts from the config (eval: data.eval files, else a data.eval_fraction share)."""
    import random

    max_prompt_len = cfg.data.max_length - cfg.rl.max_new_tokens
    if max_prompt_len < 1:
        raise TunesmithError(f"data.max_length ({cfg.data.max_length}) must exceed rl.max_new_tokens ({cfg.rl.max_new_tokens})")
    train = load_prompt_set(cfg.data.train, tokenizer, cfg.data, report, max_prompt_len)
    evals = load_prompt_set(cfg.data.eval, tokenizer, cfg.data, report, max_prompt_len) if cfg.data.eval else []
    if not evals and cfg.data.eval_fraction > 0:
        order = list(range(len(train)))
        random.Random(cfg.train.seed).shuffle(order)
        held = set(order[: max(1, round(len(train) * cfg.data.eval_fraction))])
        train, evals = [x for i, x in enumerate(train) if i not in held], [x for i, x in enumerate(train) if i in held]
    if not train:
        raise TunesmithError(f"no usable training prompts: {report.summary()}")
    return train, evals


def prompt_stats(items: list[PromptItem]) -> dict:
    """dataset_stats-style counts for prompt sets (no trained tokens before the policy writes responses)."""
    lengths = [len(p.ids) for p in items]
    return {"rows": len(items), "tokens": sum(lengths), "trained_tokens": 0,
            "mean_length": sum(lengths) / len(lengths) if lengths else 0.0, "max_length": max(lengths, default=0), "truncated": 0}
