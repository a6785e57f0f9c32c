"""`inspect`: what is in a data file, before training on it.

Rows and format, turns and roles, token counts per role (percentiles, with the model's tokenizer or
whitespace words), languages, exact and near-duplicate rates, empty / truncated answers, refusal
boilerplate, a task-type distribution (leading question word or verb of the first user turn) and its
Shannon entropy in bits (diversity), and for preference pairs the chosen-vs-rejected length bias.
`inspect_file` returns a JSON-ready dict; `write_html` renders it with matplotlib plots embedded.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

from tunesmith.data.clean.dedup import NearDupIndex, exact_key
from tunesmith.data.clean.fields import Item, iter_items, words
from tunesmith.data.clean.quality import detect_language, exchanges, is_refusal, is_truncated
from tunesmith.errors import SkipReport

QUESTION_WORDS = ("what", "why", "how", "who", "whom", "whose", "when", "where", "which", "is", "are", "can", "could",
                  "does", "do", "did", "should", "would", "will", "was", "were")
VERBS = ("write", "explain", "summarize", "summarise", "translate", "classify", "list", "generate", "create", "give",
         "describe", "rewrite", "find", "calculate", "solve", "compare", "suggest", "edit", "convert", "identify",
         "extract", "name", "tell", "make", "compose", "design", "implement", "fix", "answer", "provide", "analyze",
         "analyse", "determine", "evaluate", "paraphrase", "correct", "complete", "predict", "recommend", "define")
_BATCH = 512


def task_type(prompt: str) -> str:
    """'question:<word>' for a leading question word, the verb for a leading imperative, else 'other'."""
    ws = words(unicodedata.normalize("NFKC", prompt[:200]))
    for w in ws[:3]:  # skip a polite opener ("please write", "can you explain" is a question)
        if w in QUESTION_WORDS:
            return f"question:{w}"
        if w in VERBS:
            return w
        if w not in ("please", "hi", "hello", "hey", "now", "ok", "okay"):
            break
    return "other"


def entropy_bits(counts: dict[str, int]) -> float:
    """Shannon entropy H = -Σ p log2 p of a distribution given by counts."""
    total = sum(counts.values())
    return max(0.0, -sum(c / total * math.log2(c / total) for c in counts.values() if c)) if total else 0.0


def percentiles(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    q = np.percentile(a, [5, 50, 90, 99])
    return {"n": len(values), "mean": round(float(a.mean()), 2), "min": int(a.min()), "p5": float(q[0]), "p50": float(q[1]),
            "p90": float(q[2]), "p99": float(q[3]), "max": int(a.max())}


class _Counter:
    """Token counts per role, tokenised in batches (a fast tokenizer's batch call) or split on whitespace."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.pending: list[tuple[str, str]] = []  # (role, text)
        self.lengths: dict[str, list[int]] = {}

    def add(self, role: str, text: str) -> None:
        self.pending.append((role, text))
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        texts = [t for _, t in self.pending]
        if self.tokenizer is None:
            counts = [len(t.split()) for t in texts]
        else:
            counts = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for (role, _), n in zip(self.pending, counts):
            self.lengths.setdefault(role, []).append(n)
        self.pending.clear()


def _row_stats(item: Item, acc: dict) -> None:
    acc["turns"].append(sum(1 for s in item.slots if s.role != "system"))
    acc["roles"].update(s.role for s in item.slots)
    acc["tasks"][task_type(item.prompt)] += 1
    lang = detect_language(item.prompt or item.answer)
    acc["languages"][lang or "unknown"] += 1
    for _, answer in exchanges(item):
        acc["answers"] += 1
        a = answer.strip()
        acc["empty"] += not a
        acc["truncated"] += bool(a) and is_truncated(a)
        acc["refusals"] += bool(a) and is_refusal(a)


def _preference(item: Item, lengths: _Counter) -> None:
    chosen = "\n".join(item.texts("chosen"))
    rejected = "\n".join(item.texts("rejected"))
    if chosen and rejected:
        lengths.add("pair_chosen", chosen)
        lengths.add("pair_rejected", rejected)


def inspect_file(path: str | Path, tokenizer=None, fmt: str = "auto", near_threshold: float = 0.8,
                 num_perm: int = 128) -> dict:
    """The report for one data file (see the module docstring). `tokenizer=None` counts whitespace words."""
    report, counter = SkipReport(), _Counter(tokenizer)
    acc = {"turns": [], "roles": Counter(), "tasks": Counter(), "languages": Counter(),
           "answers": 0, "empty": 0, "truncated": 0, "refusals": 0}
    seen: set[bytes] = set()
    exact = near = rows = 0
    index = NearDupIndex(near_threshold, num_perm)
    file_format = None
    for item in iter_items(path, report, fmt):
        rows, file_format = rows + 1, item.fmt
        key = exact_key(item, "conversation")
        if key in seen:
            exact += 1
        else:
            seen.add(key)
            near += index.check_and_add(item.all_text(), item.line) is not None
        for s in item.slots:
            counter.add(s.role, s.text)
        counter.add("row", item.all_text())
        _row_stats(item, acc)
        if item.fmt == "preference":
            _preference(item, counter)
    counter.flush()
    lengths = counter.lengths
    result = {
        "file": str(path), "format": file_format, "rows": rows, "rows_read": report.total,
        "rows_skipped": report.skipped, "skip_reasons": report.reasons,
        "skip_examples": [str(p) for p in report.examples[:5]],
        "length_unit": "tokens" if tokenizer is not None else "words",
        "turns": percentiles(acc["turns"]), "roles": dict(acc["roles"]),
        "lengths": {role: percentiles(v) for role, v in lengths.items() if not role.startswith("pair_")},
        "languages": dict(acc["languages"].most_common()),
        "duplicates": {"exact": exact, "exact_rate": _rate(exact, rows), "near": near, "near_rate": _rate(near, rows),
                       "near_threshold": near_threshold},
        "answers": {"total": acc["answers"], "empty": acc["empty"], "truncated": acc["truncated"], "refusals": acc["refusals"],
                    "empty_rate": _rate(acc["empty"], acc["answers"]), "truncated_rate": _rate(acc["truncated"], acc["answers"]),
                    "refusal_rate": _rate(acc["refusals"], acc["answers"])},
        "tasks": dict(acc["tasks"].most_common()),
        "task_entropy_bits": round(entropy_bits(acc["tasks"]), 4),
        "row_lengths": lengths.get("row", []),
    }
    if "pair_chosen" in lengths:
        c, r = np.asarray(lengths["pair_chosen"]), np.asarray(lengths["pair_rejected"])
        result["preference"] = {"pairs": len(c), "chosen_mean": round(float(c.mean()), 2), "rejected_mean": round(float(r.mean()), 2),
                                "chosen_longer_rate": _rate(int((c > r).sum()), len(c)),
                                "mean_length_difference": round(float((c - r).mean()), 2)}
    return result


def _rate(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(result: dict) -> dict[str, str]:
    """Base64 PNGs: row length histogram and task-type distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(result["row_lengths"] or [0], bins=40, color="#4c78a8")
    ax.set_xlabel(f"row length ({result['length_unit']})")
    ax.set_ylabel("rows")
    out["length_histogram"] = _png(fig)
    plt.close(fig)
    tasks = list(result["tasks"].items())[:20]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(tasks) + 1))
    ax.barh([t for t, _ in tasks][::-1], [n for _, n in tasks][::-1], color="#f58518")
    ax.set_xlabel("rows")
    ax.set_title(f"task types (entropy {result['task_entropy_bits']:.2f} bits)")
    out["task_distribution"] = _png(fig)
    plt.close(fig)
    return out


def write_html(result: dict, path: str | Path) -> Path:
    """A self-contained HTML report (plots embedded as base64 PNG)."""
    images = plots(result)
    shown = {k: v for k, v in result.items() if k != "row_lengths"}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><pre>{html.escape(json.dumps(v, indent=1, ensure_ascii=False))}</pre></td></tr>"
                   for k, v in shown.items())
    imgs = "".join(f'<h2>{html.escape(k.replace("_", " "))}</h2><img alt="{k}" src="data:image/png;base64,{v}">' for k, v in images.items())
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith inspect: {html.escape(str(result['file']))}</title>"
           "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;text-align:left;vertical-align:top;padding:4px}"
           "pre{margin:0}</style></head><body>"
           f"<h1>{html.escape(str(result['file']))}</h1>{imgs}<h2>report</h2><table>{rows}</table></body></html>")
    Path(path).write_text(doc, encoding="utf-8")
    return Path(path)
