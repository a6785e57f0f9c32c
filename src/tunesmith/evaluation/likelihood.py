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
import torch.nn.functional as F

from tunesmith.data.templates import IGNORE, render
from tunesmith.errors import DataError, SkipReport


def _row_ce(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """(summed CE in nats, supervised tokens) for one row, through the SFT loss maths (the unbatched reference)."""
    from tunesmith.objectives.sft import supervised_ce_sum

    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    with torch.inference_mode():
        ce, count = supervised_ce_sum(model, input_ids, torch.ones_like(input_ids), torch.tensor([labels], device=device))
    return float(ce), count


def _right_pad(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)] = torch.tensor(row_ids)
        labels[r, : len(row_ids)] = torch.tensor(row_labels)
        mask[r, : len(row_ids)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def _per_row_ce(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(B,) summed next-token CE per row over supervised positions; padding (right side, masked) never counts.

    Like supervised_ce_sum, the LM head runs only on positions that predict a supervised token, in chunks."""
    from tunesmith.objectives.base import backbone_and_head, needs_full_logits

    targets = labels[:, 1:]
    keep = targets != IGNORE
    row_of = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(keep)[keep]
    if needs_full_logits(model):
        ce = F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float(), targets[keep], reduction="none")
    else:
        backbone, head = backbone_and_head(model)
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][keep]
        y = targets[keep]
        ce = torch.cat([F.cross_entropy(head(hidden[s : s + chunk]).float(), y[s : s + chunk], reduction="none")
                        for s in range(0, max(1, hidden.shape[0]), chunk)]) if hidden.shape[0] else hidden.new_zeros(0)
    return torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add_(0, row_of, ce.double())


def rows_ce(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed CE, supervised tokens) per (input_ids, labels) row, scored `batch_size` rows per forward pass.

    Rows are sorted by length (little padding) and right-padded; results come back in the input order and
    equal one-row-at-a-time scoring up to float rounding (tested to 1e-5)."""
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            part = order[start : start + batch_size]
            ids, mask, labels = _right_pad([rows[i] for i in part], pad_id, device)
            sums = _per_row_ce(model, ids, mask, labels).tolist()
            counts = (labels[:, 1:] != IGNORE).sum(1).tolist()
            for k, i in enumerate(part):
                out[i] = (sums[k], int(counts[k]))
    return out


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def check_text_file(path: str) -> int:
    """Parse the file (format auto-detected) so bad rows stop before any model loads; returns the row count."""
    from tunesmith.data.formats import load_records

    records, _ = load_records(path)
    return len(records)


def run_likelihood(model, tokenizer, path: str, template: str = "auto", max_length: int = 1024, limit: int | None = None,
                   batch_size: int = 8) -> dict:
    """Loss, perplexity and bits-per-byte of `model` on a chat or text file; per-row mean NLL in items."""
    from tunesmith.config.schema import DataConfig, DataSource
    from tunesmith.data.dataset import build_examples

    examples, report = build_examples([DataSource(path=path)], tokenizer, DataConfig(template=template, max_length=max_length))
    examples = examples[:limit] if limit else examples
    total_ce, total_tokens, total_bytes, items = 0.0, 0, 0, []
    was_training = model.training
    model.eval()
    try:
        scored = rows_ce(model, [(ex.input_ids, ex.labels) for ex in examples], _pad_id(tokenizer), batch_size)
        for ex, (ce, count) in zip(examples, scored):
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


def _choice_row(tokenizer, question: str, choice: str, max_length: int) -> tuple[list[int], list[int]]:
    from tunesmith.data.formats import Record

    record = Record(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": choice}], source="<choice>")
    ex = render(record, tokenizer, train_on="last_assistant", max_length=max_length)
    return ex.input_ids, ex.labels


def run_multiple_choice(model, tokenizer, items: list[dict], max_length: int = 1024, batch_size: int = 8) -> dict:
    """acc (argmax log-likelihood) and acc_norm (argmax log-likelihood per UTF-8 byte of the choice).

    Every (question, choice) row of the suite is scored in batches of `batch_size` rows."""
    rows = [_choice_row(tokenizer, item["question"], c, max_length) for item in items for c in item["choices"]]
    was_training = model.training
    model.eval()
    try:
        ces = rows_ce(model, rows, _pad_id(tokenizer), batch_size)
    finally:
        model.train(was_training)
    scored, at = [], 0
    for item in items:
        logps = [-ce for ce, _ in ces[at : at + len(item["choices"])]]
        at += len(item["choices"])
        norm = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logps, item["choices"])]
        pick, pick_norm = max(range(len(logps)), key=logps.__getitem__), max(range(len(norm)), key=norm.__getitem__)
        scored.append({"id": item["id"], "category": item["category"], "output": item["choices"][pick],
                       "reference": item["choices"][item["answer"]],
                       "scores": {"acc": float(pick == item["answer"]), "acc_norm": float(pick_norm == item["answer"])}})
    n = len(scored) or 1
    return {
        "metrics": {k: sum(s["scores"][k] for s in scored) / n for k in ("acc", "acc_norm")},
        "directions": {"acc": True, "acc_norm": True},
        "items": scored,
    }
