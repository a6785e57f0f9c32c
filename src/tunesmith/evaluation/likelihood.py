"""Likelihood suites: held-out loss / perplexity / bits-per-byte, and multiple choice by log-likelihood.

Loss is the SFT cross-entropy (objectives.sft.supervised_ce_sum) on the same tokens training supervises:
perplexity = exp(sum CE / supervised tokens); bits-per-byte = sum CE / (ln 2 * UTF-8 bytes of the
supervised text), comparable across tokenizers. Multiple choice scores each choice as the assistant answer
and picks the highest log-likelihood (acc) or log-likelihood per byte of the choice (acc_norm, as in
lm-evaluation-harness).
"""

from __future__ import annotations

import math

import torch

from tunesmith.data.templates import IGNORE, render
from tunesmith.errors import DataError, SkipReport


def _row_ce(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """(summed CE in nats, supervised tokens) for one row, through the SFT loss maths."""
    from tunesmith.objectives.sft import supervised_ce_sum

    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    with torch.inference_mode():
        ce, count = supervised_ce_sum(model, input_ids, torch.ones_like(input_ids), torch.tensor([labels], device=device))
    return float(ce), count


def check_text_file(path: str) -> int:
    """Parse the file (format auto-detected) so bad rows stop before any model loads; returns the row count."""
    from tunesmith.data.formats import load_records

    records, _ = load_records(path)
    return len(records)


def run_likelihood(model, tokenizer, path: str, template: str = "auto", max_length: int = 1024, limit: int | None = None) -> dict:
    """Loss, perplexity and bits-per-byte of `model` on a chat or text file; per-row mean NLL in items."""
    from tunesmith.config.schema import DataConfig, DataSource
    from tunesmith.data.dataset import build_examples

    examples, report = build_examples([DataSource(path=path)], tokenizer, DataConfig(template=template, max_length=max_length))
    examples = examples[:limit] if limit else examples
    total_ce, total_tokens, total_bytes, items = 0.0, 0, 0, []
    was_training = model.training
    model.eval()
    try:
        for ex in examples:
            ce, count = _row_ce(model, ex.input_ids, ex.labels)
            target = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE]
            nbytes = len(tokenizer.decode(target, skip_special_tokens=True).encode("utf-8"))
            total_ce, total_tokens, total_bytes = total_ce + ce, total_tokens + count, total_bytes + nbytes
            items.append({"id": f"{ex.source}:{ex.line}", "category": "all", "scores": {"nll": ce / max(count, 1)}})
    finally:
        model.train(was_training)
    loss = total_ce / max(total_tokens, 1)
    return {
        "metrics": {"loss": loss, "perplexity": math.exp(loss),
                    "bits_per_byte": total_ce / (math.log(2) * max(total_bytes, 1)), "tokens": float(total_tokens)},
        "directions": {"loss": False, "perplexity": False, "bits_per_byte": False, "nll": False},
        "items": items,
        "skipped": report.summary() if isinstance(report, SkipReport) else "",
    }


def load_choice_items(path: str, limit: int | None = None) -> list[dict]:
    """Multiple-choice rows {question, choices: [str], answer: index or choice text, category?}; bad rows stop."""
    from tunesmith.data.readers import read_rows

    items = []
    for line, row in read_rows(path, SkipReport(), on_error="stop"):
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise DataError(path, line, "question", "must be a non-empty string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise DataError(path, line, "choices", "must be a list of at least two non-empty strings")
        if isinstance(answer, str) and answer in choices:
            answer = choices.index(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(path, line, "answer", f"must be a choice index 0..{len(choices) - 1} or the text of a choice, got {answer!r}")
        items.append({"id": row.get("id", f"{path}:{line}"), "question": question, "choices": choices,
                      "answer": answer, "category": str(row.get("category", "all"))})
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(path, None, None, "no multiple-choice items")
    return items


def _choice_logprob(model, tokenizer, question: str, choice: str, max_length: int) -> float:
    from tunesmith.data.formats import Record

    record = Record(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": choice}], source="<choice>")
    ex = render(record, tokenizer, train_on="last_assistant", max_length=max_length)
    ce, _ = _row_ce(model, ex.input_ids, ex.labels)
    return -ce


def run_multiple_choice(model, tokenizer, items: list[dict], max_length: int = 1024) -> dict:
    """acc (argmax log-likelihood) and acc_norm (argmax log-likelihood per UTF-8 byte of the choice)."""
    scored = []
    was_training = model.training
    model.eval()
    try:
        for item in items:
            logps = [_choice_logprob(model, tokenizer, item["question"], c, max_length) for c in item["choices"]]
            norm = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logps, item["choices"])]
            pick, pick_norm = max(range(len(logps)), key=logps.__getitem__), max(range(len(norm)), key=norm.__getitem__)
            scored.append({"id": item["id"], "category": item["category"], "output": item["choices"][pick],
                           "reference": item["choices"][item["answer"]],
                           "scores": {"acc": float(pick == item["answer"]), "acc_norm": float(pick_norm == item["answer"])}})
    finally:
        model.train(was_training)
    n = len(scored) or 1
    return {
        "metrics": {k: sum(s["scores"][k] for s in scored) / n for k in ("acc", "acc_norm")},
        "directions": {"acc": True, "acc_norm": True},
        "items": scored,
    }
