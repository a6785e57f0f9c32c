"""Scores for the JSON-extraction task: valid JSON rate, exact match (types included) and per-field accuracy."""

from __future__ import annotations

import json
import re

from tunesmith.errors import TunesmithError

_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)


def parse_json_object(text: str) -> dict | None:
    """The JSON object in `text`, or None. Tolerates surrounding whitespace and one ```json fence, nothing else."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def first_json_object(text: str) -> dict | None:
    """The first JSON object anywhere in `text` (lenient: chatter before or after it is ignored)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None


def _exact(parsed: dict | None, target: dict) -> bool:
    return parsed is not None and set(parsed) == set(target) and all(same_value(parsed[k], v) for k, v in target.items())


def same_value(a: object, b: object) -> bool:
    """Equal with the same type: 4 != 4.0 != "4" and True != 1 here."""
    return type(a) is type(b) and a == b


def score_json_extraction(outputs: list[str], targets: list[dict]) -> dict:
    """Metrics over paired outputs and targets.

    exact_match needs a JSON object with exactly the target's keys, each value equal and of the same type;
    field_accuracy[k] is the share of rows whose parsed object has target[k] (same type) under key k.
    lenient_exact_match applies exact_match to the first JSON object found anywhere in the output, so
    it shows how much of the gap is chatter around the answer rather than wrong fields.
    """
    if len(outputs) != len(targets):
        raise TunesmithError(f"{len(outputs)} outputs but {len(targets)} targets: they must pair up")
    n = len(outputs)
    fields = list(targets[0]) if targets else []
    valid = exact = lenient = 0
    field_hits = {k: 0 for k in fields}
    for output, target in zip(outputs, targets):
        lenient += int(_exact(first_json_object(output), target))
        parsed = parse_json_object(output)
        if parsed is None:
            continue
        valid += 1
        exact += int(_exact(parsed, target))
        for k in fields:
            field_hits[k] += int(k in parsed and k in target and same_value(parsed[k], target[k]))
    rate = (lambda count: count / n) if n else (lambda count: 0.0)
    return {
        "n": n,
        "valid_json_rate": rate(valid),
        "exact_match": rate(exact),
        "field_accuracy": {k: rate(v) for k, v in field_hits.items()},
        "lenient_exact_match": rate(lenient),
    }
