"""Generation suites: greedy (or sampled) answers scored against references.

Metrics per item and averaged: exact match (case/whitespace-normalised), regex match, JSON-field match,
ROUGE-1/2/L F1 (Lin 2004, via `rouge-score`), sentence BLEU and chrF (Papineni 2002; Popović 2015, via
`sacrebleu`); corpus BLEU and chrF over the whole suite. The generation settings go into the results.
"""

from __future__ import annotations

import re
import time

from tunesmith.errors import DataError, SkipReport

_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACES.sub(" ", text.strip().casefold())


def generate_texts(model, tokenizer, conversations: list[list[dict]], settings) -> tuple[list[str], float]:
    """Answers to each conversation with the model's chat template, and the seconds it took."""
    from tunesmith.data.templates import render_prompt, stop_token_ids
    from tunesmith.serving.engine import generate

    prompts = [render_prompt(c, tokenizer) for c in conversations]
    started = time.perf_counter()
    results = generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                       top_p=settings.top_p, batch_size=settings.batch_size, stop_ids=stop_token_ids(tokenizer), seed=settings.seed)
    return [r.text for r in results], time.perf_counter() - started


def _reference(row: dict, path: str, line: int) -> tuple[list[str], dict | None]:
    refs = row.get("references", row.get("reference"))
    target = row.get("target") if isinstance(row.get("target"), dict) else None
    if refs is None and isinstance(row.get("messages"), list) and row["messages"] and isinstance(row["messages"][-1], dict) \
            and row["messages"][-1].get("role") == "assistant":
        refs = row["messages"][-1].get("content")
    if refs is None and isinstance(row.get("completion"), str):
        refs = row["completion"]
    if isinstance(refs, str):
        refs = [refs]
    if refs is None and target is None and not row.get("pattern"):
        raise DataError(path, line, "reference", "missing: give 'reference' (string), 'references' (list), 'target' (object), "
                        "'pattern' (regex) or end 'messages' with the assistant answer")
    if refs is not None and (not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs)):
        raise DataError(path, line, "references", "must be a non-empty string or list of strings")
    return refs or [], target


def load_generation_items(path: str, limit: int | None = None) -> list[dict]:
    """Rows {prompt | messages, reference | references | target | pattern, category?, id?}; bad rows stop."""
    from tunesmith.data.readers import read_rows
    from tunesmith.serving.engine import prompt_messages

    items = []
    for line, row in read_rows(path, SkipReport(), on_error="stop"):
        refs, target = _reference(row, path, line)
        pattern = row.get("pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise DataError(path, line, "pattern", f"not a valid regular expression: {exc}") from None
        items.append({"id": str(row.get("id", f"{path}:{line}")), "messages": prompt_messages(row, path, line),
                      "references": refs, "target": target, "pattern": pattern, "category": str(row.get("category", "all"))})
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(path, None, None, "no items to evaluate")
    return items


def rouge_scores(output: str, references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1, best over the references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    best = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for ref in references:
        scores = scorer.score(ref, output)
        for k in best:
            best[k] = max(best[k], scores[k].fmeasure)
    return best


def bleu_chrf(output: str, references: list[str]) -> dict[str, float]:
    """Sentence BLEU and chrF (0-100) against all references."""
    import sacrebleu

    return {"bleu": sacrebleu.sentence_bleu(output, references).score, "chrf": sacrebleu.sentence_chrf(output, references).score}


def corpus_bleu_chrf(outputs: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF; items with fewer references are padded with their first one."""
    import sacrebleu

    width = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]
    return {"corpus_bleu": sacrebleu.corpus_bleu(outputs, streams).score, "corpus_chrf": sacrebleu.corpus_chrf(outputs, streams).score}


def json_field_match(output: str, target: dict) -> float:
    """Share of the target's fields that the first JSON object in the output has with the same value and type."""
    from tunesmith.tasks.scoring import first_json_object, same_value

    parsed = first_json_object(output) or {}
    return sum(k in parsed and same_value(parsed[k], v) for k, v in target.items()) / max(1, len(target))


def score_item(output: str, item: dict, regex: str | None = None) -> dict[str, float]:
    scores: dict[str, float] = {}
    if item["references"]:
        scores["exact_match"] = float(any(normalise(output) == normalise(r) for r in item["references"]))
        scores.update(rouge_scores(output, item["references"]))
        scores.update(bleu_chrf(output, item["references"]))
    pattern = item.get("pattern") or regex
    if pattern:
        scores["regex_match"] = float(re.search(pattern, output) is not None)
    if item.get("target"):
        scores["json_field_match"] = json_field_match(output, item["target"])
    return scores


def run_generation(model, tokenizer, items: list[dict], settings, regex: str | None = None) -> dict:
    """Generate for every item and score it; corpus BLEU/chrF over items that have references."""
    outputs, seconds = generate_texts(model, tokenizer, [i["messages"] for i in items], settings)
    scored = []
    for item, output in zip(items, outputs):
        scored.append({"id": item["id"], "category": item["category"], "output": output,
                       "reference": item["references"][0] if item["references"] else item.get("target") or item.get("pattern"),
                       "scores": score_item(output, item, regex)})
    names = sorted({k for s in scored for k in s["scores"]})
    metrics = {}
    for k in names:
        values = [s["scores"][k] for s in scored if k in s["scores"]]
        metrics[k] = sum(values) / len(values)
    with_refs = [(o, i["references"]) for o, i in zip(outputs, items) if i["references"]]
    if with_refs:
        metrics.update(corpus_bleu_chrf([o for o, _ in with_refs], [r for _, r in with_refs]))
    return {"metrics": metrics, "directions": {k: True for k in [*names, "corpus_bleu", "corpus_chrf"]}, "items": scored,
            "generation_seconds": round(seconds, 3)}
