"""Verifiable instruction-following checks in the style of IFEval (Zhou et al. 2023, arXiv:2311.07911).

Each instruction is `{"kind": name, **kwargs}`; `CHECKS[name](response, **kwargs) -> bool`. A prompt passes
when every one of its instructions passes. "Loose" accuracy retries a check on variants of the response
(markdown asterisks removed, first and/or last line dropped) and passes if any variant passes, as IFEval does.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from tunesmith.errors import TunesmithError

RELATIONS = ("at least", "less than", "exactly", "at most")

_WORD = re.compile(r"\b\w+\b")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")
_STAR_BULLET = re.compile(r"^\s*[*\-]\s+", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
_TITLE = re.compile(r"<<[^<>\n]+>>")
_HIGHLIGHT = re.compile(r"\*[^\n*]+\*")


def compare(count: int, relation: str, n: int) -> bool:
    """count <relation> n, relation one of RELATIONS."""
    if relation == "at least":
        return count >= n
    if relation == "less than":
        return count < n
    if relation == "at most":
        return count <= n
    if relation == "exactly":
        return count == n
    raise TunesmithError(f"unknown relation '{relation}': use one of {', '.join(RELATIONS)}")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    parts = _SENTENCE_END.split(text.strip())
    return [p for p in parts if p.strip()]


def paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines or by a '***' line (IFEval's separator)."""
    chunks = re.split(r"\n\s*\*\*\*\s*\n|\n\s*\n", text.strip())
    return [c for c in chunks if c.strip()]


def _json_format(r: str) -> bool:
    body = r.strip()
    fenced = re.match(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```$", body, re.DOTALL)
    body = fenced.group(1).strip() if fenced else body
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _word_count(r: str, relation: str, n: int) -> bool:
    return compare(len(words(r)), relation, n)


def _sentence_count(r: str, relation: str, n: int) -> bool:
    return compare(len(sentences(r)), relation, n)


def _paragraph_count(r: str, n: int) -> bool:
    return len(paragraphs(r)) == n


def _bullet_count(r: str, n: int) -> bool:
    return len(_STAR_BULLET.findall(r)) == n


def _include_keywords(r: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), r, re.IGNORECASE) for k in keywords)


def _forbidden_words(r: str, forbidden: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", r, re.IGNORECASE) for w in forbidden)


def _keyword_frequency(r: str, keyword: str, relation: str, n: int) -> bool:
    return compare(len(re.findall(r"\b" + re.escape(keyword) + r"\b", r, re.IGNORECASE)), relation, n)


def _lowercase(r: str) -> bool:
    return r == r.lower() and any(c.isalpha() for c in r)


def _uppercase(r: str) -> bool:
    return r == r.upper() and any(c.isalpha() for c in r)


def _starts_with(r: str, phrase: str) -> bool:
    return r.strip().lower().startswith(phrase.strip().lower())


def _ends_with(r: str, phrase: str) -> bool:
    return r.strip().lower().endswith(phrase.strip().lower())


def _numbered_sections(r: str, n: int, section_word: str = "SECTION") -> bool:
    found = re.findall(r"\b" + re.escape(section_word) + r"\s+(\d+)", r)
    return [int(x) for x in found] == list(range(1, n + 1))


def _placeholders(r: str, n: int) -> bool:
    return len(_PLACEHOLDER.findall(r)) >= n


def _title(r: str) -> bool:
    return bool(_TITLE.search(r))


def _quotation(r: str) -> bool:
    body = r.strip()
    return len(body) > 1 and body[0] == '"' and body[-1] == '"'


def _no_commas(r: str) -> bool:
    return "," not in r


def _postscript(r: str, marker: str = "P.S.") -> bool:
    return bool(re.search(r"^\s*" + re.escape(marker), r, re.MULTILINE | re.IGNORECASE))


def _highlighted_sections(r: str, n: int) -> bool:
    spans = [m for m in _HIGHLIGHT.findall(r) if m.strip("*").strip()]
    return len(spans) >= n


def _letter_frequency(r: str, letter: str, relation: str, n: int) -> bool:
    return compare(r.lower().count(letter.lower()), relation, n)


def _capital_word_frequency(r: str, relation: str, n: int) -> bool:
    caps = [w for w in words(r) if w.isupper() and len(w) > 1 and not w.isdigit()]
    return compare(len(caps), relation, n)


def _two_responses(r: str, separator: str = "******") -> bool:
    parts = [p.strip() for p in r.split(separator)]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _repeat_prompt(r: str, prompt_to_repeat: str) -> bool:
    return r.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _constrained_response(r: str, options: list[str]) -> bool:
    return any(o.lower() in r.lower() for o in options)


def _end_with_question(r: str) -> bool:
    return r.strip().endswith("?")


# Most frequent function words per language: a response is in language L when L's words dominate.
STOPWORDS = {
    "en": "the and is are to of in that it for with was on you this be have not",
    "fr": "le la les et est de des un une que pour dans pas vous nous sur avec ce il",
    "de": "der die das und ist nicht ein eine zu mit den von sie ich auf für es",
    "es": "el la los las y es de que en un una por para con no se lo su",
    "it": "il lo la gli le e è di che un una per non con sono si del",
    "pt": "o a os as e é de que em um uma para com não se do da",
    "nl": "de het een en is van dat niet in op te zijn met voor",
}
_STOPSETS = {lang: set(ws.split()) for lang, ws in STOPWORDS.items()}


def detect_language(text: str) -> str | None:
    """The language whose function words are most frequent in `text` (None when none occur)."""
    tokens = [w.lower() for w in words(text)]
    scores = {lang: sum(t in stop for t in tokens) for lang, stop in _STOPSETS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


def _response_language(r: str, language: str) -> bool:
    return detect_language(r) == language


CHECKS: dict[str, Callable[..., bool]] = {
    "json_format": _json_format,
    "word_count": _word_count,
    "sentence_count": _sentence_count,
    "paragraph_count": _paragraph_count,
    "bullet_count": _bullet_count,
    "include_keywords": _include_keywords,
    "forbidden_words": _forbidden_words,
    "keyword_frequency": _keyword_frequency,
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "numbered_sections": _numbered_sections,
    "placeholders": _placeholders,
    "title": _title,
    "quotation": _quotation,
    "no_commas": _no_commas,
    "postscript": _postscript,
    "highlighted_sections": _highlighted_sections,
    "letter_frequency": _letter_frequency,
    "capital_word_frequency": _capital_word_frequency,
    "two_responses": _two_responses,
    "repeat_prompt": _repeat_prompt,
    "constrained_response": _constrained_response,
    "end_with_question": _end_with_question,
    "response_language": _response_language,
}


def loose_variants(response: str) -> list[str]:
    """IFEval's loose variants: the response with/without '*', first line, last line, both lines removed."""
    lines = response.split("\n")
    cut = ["\n".join(lines), "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return [v for base in cut for v in (base, base.replace("*", "")) if v.strip()]


def check_instruction(response: str, instruction: dict, loose: bool = False) -> bool:
    """Whether `response` follows one instruction {"kind": ..., **kwargs}; loose tries the IFEval variants."""
    kind = instruction.get("kind")
    if kind not in CHECKS:
        raise TunesmithError(f"unknown instruction kind '{kind}': known kinds are {', '.join(sorted(CHECKS))}")
    kwargs = {k: v for k, v in instruction.items() if k != "kind"}
    fn = CHECKS[kind]
    try:
        if not loose:
            return bool(response.strip()) and bool(fn(response, **kwargs))
        return any(fn(v, **kwargs) for v in loose_variants(response))
    except TypeError as exc:
        raise TunesmithError(f"instruction '{kind}' has wrong arguments {sorted(kwargs)}: {exc}") from None


def score_response(response: str, instructions: list[dict]) -> dict:
    """Per-prompt result: strict/loose pass flags for each instruction and for the whole prompt."""
    strict = [check_instruction(response, i) for i in instructions]
    loose = [check_instruction(response, i, loose=True) for i in instructions]
    return {
        "strict": strict,
        "loose": loose,
        "prompt_strict": float(all(strict)),
        "prompt_loose": float(all(loose)),
        "instruction_strict": sum(strict) / len(strict) if strict else 1.0,
        "instruction_loose": sum(loose) / len(loose) if loose else 1.0,
    }


def aggregate(scored: list[dict], instructions: list[list[dict]]) -> dict:
    """Prompt-level and instruction-level accuracy (strict and loose) plus per-kind strict accuracy."""
    flat_strict = [s for r in scored for s in r["strict"]]
    flat_loose = [s for r in scored for s in r["loose"]]
    per_kind: dict[str, list[bool]] = {}
    for result, insts in zip(scored, instructions):
        for ok, inst in zip(result["strict"], insts):
            per_kind.setdefault(inst["kind"], []).append(ok)
    n = len(scored) or 1
    return {
        "prompt_strict": sum(r["prompt_strict"] for r in scored) / n,
        "prompt_loose": sum(r["prompt_loose"] for r in scored) / n,
        "instruction_strict": sum(flat_strict) / (len(flat_strict) or 1),
        "instruction_loose": sum(flat_loose) / (len(flat_loose) or 1),
        "per_kind_strict": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())},
    }
