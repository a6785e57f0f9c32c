"""LLM-as-a-judge: single-answer grading 1-10 and pairwise comparison in both orders.

Prompts and verdict formats follow MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge", arXiv:2306.05685):
single grading ends with "Rating: [[7]]"; pairwise ends with "[[A]]", "[[B]]" or "[[C]]" (tie). Pairwise runs
in both orders to cancel position bias; a side wins only when it is preferred in BOTH orders, any other
combination is a tie (a judge that disagrees with itself is counted as `inconsistent`).

The judge is any model tunesmith loads or an OpenAI-compatible endpoint, through the shared completion
backends (`data.synth.backends`: retries with backoff, timeouts counted). Every answered request is stored
in a verdict cache (JSONL, keyed by judge identity + the exact judge conversation) the moment its chunk
returns, so a run that lost requests to timeouts keeps what it got and a rerun asks only for the rest.
Unparsable judgements are counted, excluded from the scores and reported (not retried: a deterministic
judge would say the same again).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tunesmith.errors import DataError, SkipReport, TunesmithError

JUDGE_VERSION = 1  # bump when a prompt changes, so cached verdicts are not reused
SYSTEM = "You are a helpful assistant."

SINGLE_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response.{ref_note} Begin your evaluation by "
    "providing a short explanation. Be as objective as possible. After providing your explanation, you must rate the "
    "response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n{reference}[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
REF_NOTE = " You will be given a reference answer and the assistant's answer; compare them and identify mistakes."
PAIR_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the user's "
    "instructions and answers the user's question better. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation "
    "by comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the order "
    "in which the responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Be as objective as possible. After providing your explanation, output your final verdict "
    "by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and "
    "\"[[C]]\" for a tie.\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)

_RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+(?:\.\d+)?)\]")  # MT-Bench's fallback pattern
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def parse_rating(text: str | None) -> float | None:
    """The last "[[x]]" (else "[x]") rating in 1..10, or None when there is none (unparsable)."""
    if not text:
        return None
    found = _RATING.findall(text) or _RATING_BACKUP.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return value if 1 <= value <= 10 else None


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B' or 'tie' from a pairwise judgement; None when absent or contradictory ("[[A]] ... [[B]]")."""
    found = set(_VERDICT.findall(text or ""))
    if len(found) != 1:
        return None
    return {"A": "A", "B": "B", "C": "tie"}[found.pop()]


def pairwise_outcome(first: str, second: str) -> tuple[float, bool]:
    """(score of the candidate, inconsistent) from the verdict with the candidate as A, then as B.

    1 = candidate preferred in both orders, 0 = the other answer preferred in both, 0.5 otherwise (tie);
    `inconsistent` when the two verdicts pick the same POSITION (the judge contradicted itself).
    """
    if first == "A" and second == "B":
        return 1.0, False
    if first == "B" and second == "A":
        return 0.0, False
    return 0.5, (first == second and first in ("A", "B"))


def win_rate(scores: list[float], n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Mean pairwise score (ties = 1/2) with a percentile bootstrap CI over items (stats.paired_bootstrap)."""
    from tunesmith.evaluation.stats import paired_bootstrap

    boot = paired_bootstrap([0.0] * len(scores), scores, n_resamples, seed, alpha)
    return {"win_rate": boot["mean_diff"], "win_rate_ci_low": boot["ci_low"], "win_rate_ci_high": boot["ci_high"]}


class VerdictCache:
    """Judge answers by key, appended to `<folder>/verdicts.jsonl` as they arrive."""

    def __init__(self, folder: str | Path | None):
        self.path = Path(folder) / "verdicts.jsonl" if folder else None
        self.data: dict[str, str] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.data[row["key"]] = row["text"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash: that verdict is asked again

    def put_many(self, pairs: list[tuple[str, str]]) -> None:
        for key, text in pairs:
            self.data[key] = text
        if self.path is not None and pairs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps({"key": k, "text": t}) + "\n" for k, t in pairs))


_BACKENDS: dict[str, object] = {}


def _identity(spec) -> str:
    """What decides a judge's answers: the endpoint URL and served model, or the local model's file digest."""
    if spec.endpoint:
        from tunesmith.data.synth.backends import chat_url

        return json.dumps(["endpoint", chat_url(spec.endpoint), spec.model])
    from tunesmith.evaluation.config import ModelSpec
    from tunesmith.evaluation.runner import model_hash

    return json.dumps(["local", model_hash(ModelSpec(name="judge", model=spec.model, adapter=spec.adapter, dtype=spec.dtype,
                                                     template=spec.template))])


class Judge:
    """Asks the judge (through the cache); counts what failed. `failures` maps a reason to a count."""

    def __init__(self, spec, backend=None):
        from tunesmith.data.synth.backends import make_backend

        self.spec, self.identity = spec, _identity(spec)
        if backend is None:
            slot = json.dumps([self.identity, spec.api_key, spec.timeout, spec.retries, spec.backoff, spec.concurrency])
            if slot not in _BACKENDS:  # one judge model per process, shared by every evaluated model
                _BACKENDS[slot] = make_backend(spec.model, spec.endpoint, spec.api_key, adapter=spec.adapter,
                                                        dtype=spec.dtype, template=spec.template, timeout=spec.timeout,
                                                        retries=spec.retries, backoff=spec.backoff, concurrency=spec.concurrency)
            backend = _BACKENDS[slot]
        self.backend = backend
        self.cache = VerdictCache(spec.cache)
        self.failures: dict[str, int] = {}
        self.asked = self.from_cache = 0

    def key(self, conversation: list[dict]) -> str:
        body = json.dumps([self.identity, JUDGE_VERSION, self.spec.max_new_tokens, conversation], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def ask(self, prompts: list[str]) -> list[str | None]:
        """One judgement per prompt (None where the request failed); answered chunks are cached at once."""
        conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in prompts]
        keys = [self.key(c) for c in conversations]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.cache.data}.values())
        self.from_cache += len(keys) - len(todo)
        chunk = max(8, 2 * self.spec.concurrency)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            before = dict(self.backend.stats.failures)
            answers = self.backend.complete([conversations[i] for i in part], temperature=0.0,
                                            max_new_tokens=self.spec.max_new_tokens, seed=0)
            self.asked += len(part)
            for reason, n in self.backend.stats.failures.items():
                if n > before.get(reason, 0):
                    self.failures[reason] = self.failures.get(reason, 0) + n - before.get(reason, 0)
            self.cache.put_many([(keys[i], a) for i, a in zip(part, answers) if a is not None])
        return [self.cache.data.get(k) for k in keys]

    def check_complete(self, answers: list[str | None], what: str) -> None:
        """Raise (results so far stay cached) when some requests got no answer."""
        missing = sum(a is None for a in answers)
        if missing:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.failures.items())) or "no answer"
            kept = len(answers) - missing
            where = f" in {self.cache.path}" if self.cache.path else ""
            raise TunesmithError(f"{what}: {missing} of {len(answers)} judge requests failed ({reasons}); {kept} verdicts "
                                 f"are kept{where}; run again to complete the rest")


def question_text(messages: list[dict]) -> str:
    """The user question as the judge sees it: the last user turn, earlier turns quoted before it."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def grade(judge: Judge, questions: list[str], answers: list[str], references: list[str | None] | None = None) -> list[dict]:
    """[{"rating": 1..10 or None, "judgement": raw text or None}] per answer (MT-Bench single-v1 / single-v1-ref)."""
    references = references or [None] * len(answers)
    prompts = [SINGLE_PROMPT.format(question=q, answer=a, ref_note=REF_NOTE if r else "",
                                    reference=f"[The Start of Reference Answer]\n{r}\n[The End of Reference Answer]\n\n" if r else "")
               for q, a, r in zip(questions, answers, references)]
    texts = judge.ask(prompts)
    return [{"rating": parse_rating(t), "judgement": t} for t in texts]


def compare_pairs(judge: Judge, questions: list[str], answers: list[str], others: list[str]) -> list[dict]:
    """Both orders per item: [{"score": 1 | 0.5 | 0 or None (unparsable/failed), "inconsistent", "verdicts"}]."""
    first = [PAIR_PROMPT.format(question=q, a=a, b=o) for q, a, o in zip(questions, answers, others)]
    second = [PAIR_PROMPT.format(question=q, a=o, b=a) for q, a, o in zip(questions, answers, others)]
    texts = judge.ask(first + second)
    out = []
    for t1, t2 in zip(texts[: len(first)], texts[len(first):]):
        v1, v2 = parse_verdict(t1), parse_verdict(t2)
        if v1 is None or v2 is None:
            out.append({"score": None, "inconsistent": False, "verdicts": [v1, v2], "judgement": [t1, t2]})
            continue
        score, inconsistent = pairwise_outcome(v1, v2)
        out.append({"score": score, "inconsistent": inconsistent, "verdicts": [v1, v2], "judgement": [t1, t2]})
    return out


# ---------------------------------------------------------------- the judge suite


def load_judge_items(path: str | None, mode: str, limit: int | None = None) -> list[dict]:
    """Rows {prompt | messages, reference?, category?, id?}; pairwise needs a reference answer per row.

    Without a file: the bundled general-knowledge questions with their reference answers.
    """
    from tunesmith.data.readers import read_rows
    from tunesmith.serving.engine import prompt_messages

    if path is None:
        from tunesmith.evaluation.general_probe import PAIRS

        items = [{"id": f"general-{i:02d}", "messages": [{"role": "user", "content": q}], "reference": a, "category": "general"}
                 for i, (q, a) in enumerate(PAIRS)]
        return items[:limit] if limit else items
    items = []
    for line, row in read_rows(path, SkipReport(), on_error="stop"):
        messages = prompt_messages(row, path, line)
        ref = row.get("reference")
        if ref is None and isinstance(row.get("messages"), list) and row["messages"][-1].get("role") == "assistant":
            ref = row["messages"][-1]["content"]
        if ref is not None and (not isinstance(ref, str) or not ref.strip()):
            raise DataError(path, line, "reference", "must be a non-empty string")
        if mode == "pairwise" and ref is None:
            raise DataError(path, line, "reference", "missing: pairwise judging compares each answer with the row's reference answer")
        items.append({"id": str(row.get("id", f"{path}:{line}")), "messages": messages, "reference": ref,
                      "category": str(row.get("category", "all"))})
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(path, None, None, "no items to judge")
    return items


def _single(judge: Judge, items: list[dict], questions: list[str], outputs: list[str]) -> dict:
    graded = grade(judge, questions, outputs, [i["reference"] for i in items])
    judge.check_complete([g["judgement"] for g in graded], "judge (single)")
    ratings = [g["rating"] for g in graded if g["rating"] is not None]
    scored = [{"id": i["id"], "category": i["category"], "output": o, "reference": i["reference"], "judgement": g["judgement"],
               "scores": {} if g["rating"] is None else {"rating": g["rating"]}} for i, o, g in zip(items, outputs, graded)]
    metrics = {"mean_rating": sum(ratings) / len(ratings) if ratings else 0.0, "rated": float(len(ratings)),
               "unparsable": float(len(graded) - len(ratings))}
    return {"metrics": metrics, "directions": {"rating": True, "mean_rating": True, "unparsable": False}, "items": scored}


def _pairwise(judge: Judge, items: list[dict], questions: list[str], outputs: list[str]) -> dict:
    pairs = compare_pairs(judge, questions, outputs, [i["reference"] for i in items])
    judge.check_complete([t for p in pairs for t in p["judgement"]], "judge (pairwise)")
    scores = [p["score"] for p in pairs if p["score"] is not None]
    metrics = {**win_rate(scores), "wins": float(scores.count(1.0)), "ties": float(scores.count(0.5)),
               "losses": float(scores.count(0.0)), "inconsistent": float(sum(p["inconsistent"] for p in pairs)),
               "unparsable": float(len(pairs) - len(scores))}
    scored = [{"id": i["id"], "category": i["category"], "output": o, "reference": i["reference"], "verdicts": p["verdicts"],
               "scores": {} if p["score"] is None else {"win": p["score"]}} for i, o, p in zip(items, outputs, pairs)]
    return {"metrics": metrics, "directions": {"win": True, "win_rate": True, "unparsable": False, "losses": False}, "items": scored}


def run_judge(model, tokenizer, items: list[dict], spec, settings) -> dict:
    """Generate an answer per item, then have the judge grade it (single) or compare it with the reference (pairwise)."""
    from tunesmith.evaluation.generation import generate_texts

    outputs, seconds = generate_texts(model, tokenizer, [i["messages"] for i in items], settings)
    judge = Judge(spec.judge)
    questions = [question_text(i["messages"]) for i in items]
    result = (_pairwise if spec.mode == "pairwise" else _single)(judge, items, questions, outputs)
    result["generation_seconds"] = round(seconds, 3)
    result["judge"] = {"model": spec.judge.model, "endpoint": spec.judge.endpoint, "mode": spec.mode,
                       "requests": judge.asked, "from_cache": judge.from_cache, "failures": judge.failures}
    return result


# ---------------------------------------------------------------- head-to-head: two evaluated models


def head_to_head(spec, items: list[dict], res_a: dict, res_b: dict, name_a: str, name_b: str,
                 n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Judge model B's answer against model A's on every item, in both orders (MT-Bench pairwise, no reference).

    A side wins an item only when preferred in both orders; disagreement is a tie (1/2). Identical answers are
    a tie without asking. Reports B's win rate with a bootstrap CI, the sign test on wins vs losses, and a
    verdict. Raises TunesmithError when requests failed (verdicts so far stay in the verdict cache)."""
    from tunesmith.evaluation.stats import sign_test

    outs_a, outs_b = [i.get("output") for i in res_a["items"]], [i.get("output") for i in res_b["items"]]
    if len(outs_a) != len(items) or len(outs_b) != len(items) or None in outs_a + outs_b:
        raise TunesmithError(f"head-to-head {name_b} vs {name_a}: both models need one answer per item")
    judge = Judge(spec.judge)
    ask = [k for k in range(len(items)) if outs_a[k].strip() != outs_b[k].strip()]
    questions = [question_text(items[k]["messages"]) for k in ask]
    asked = compare_pairs(judge, questions, [outs_b[k] for k in ask], [outs_a[k] for k in ask])
    judge.check_complete([t for p in asked for t in p["judgement"]], f"judge head-to-head {name_b} vs {name_a}")
    pairs = [{"score": 0.5, "inconsistent": False, "verdicts": ["identical", "identical"]} for _ in items]
    for k, p in zip(ask, asked):
        pairs[k] = p
    scores = [p["score"] for p in pairs if p["score"] is not None]
    wins, losses = scores.count(1.0), scores.count(0.0)
    rate = win_rate(scores, n_resamples, seed, alpha)
    p_value = sign_test([0.0] * (wins + losses), [1.0] * wins + [-1.0] * losses)["p_value"]
    if p_value < alpha and wins != losses:
        verdict = f"{name_b if wins > losses else name_a} better, p={p_value:.3g}"
    else:
        verdict = f"no significant difference (p={p_value:.3g})"
    return {"a": name_a, "b": name_b, "candidate": name_b, **rate, "wins": wins, "ties": scores.count(0.5), "losses": losses,
            "inconsistent": sum(p["inconsistent"] for p in pairs), "unparsable": len(pairs) - len(scores),
            "identical": len(items) - len(ask), "p_value": p_value, "test": "sign test (wins vs losses, ties dropped)",
            "verdict": verdict, "requests": judge.asked, "from_cache": judge.from_cache,
            "items": [{"id": i["id"], "category": i["category"], "verdicts": p["verdicts"], "score": p["score"]}
                      for i, p in zip(items, pairs)]}
