"""Prompt-only sets for online RL (PPO/GRPO): {"prompt": str} or {"messages": [...]} rows.

A final assistant turn (e.g. a reference answer, as in the quickstart files) is left out: the policy writes it.
Every other field of the row (e.g. `target`) is kept and handed to reward functions. Prompts are rendered with
the training template and its generation prompt (`templates.render_prompt`), exactly as `generate` does.
Bad rows raise DataError naming file, line and field, or are skipped and counted (data.on_error: skip).
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


def load_prompt_sets(cfg, tokenizer, report: SkipReport) -> tuple[list[PromptItem], list[PromptItem]]:
    """Train and eval prompts from the config (eval: data.eval files, else a data.eval_fraction share)."""
    import random

    max_prompt_len = cfg.data.max_length - cfg.rl.max_new_tokens
    if max_prompt_len < 1:
        raise TunesmithError(f"data.max_length ({cfg.data.max_length}) must exceed rl.max_new_tokens ({cfg.rl.max_new_tokens})")
    train = load_prompts(cfg.data.train, tokenizer, cfg.data, report, max_prompt_len)
    evals = load_prompts(cfg.data.eval, tokenizer, cfg.data, report, max_prompt_len) if cfg.data.eval else []
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
