"""Quality rules made for chat data, each a small named check on one (question, answer) exchange.

Rules: empty answer, too short / too long answer, truncated answer (ends mid-sentence: a trailing
connective, comma or colon, an open bracket or an unclosed code fence), answer that repeats the question,
repetitive answer (share of repeated word 3-grams, cf. Gopher's repetition filters, Rae et al. 2021),
refusal boilerplate, and language mismatch between question and answer (script, then stopwords).
Every exchange of a multi-turn row is checked; the first failing rule names the removal reason.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.data.clean.fields import Item, Verdict, norm_text, removed, words

REFUSALS = (
    r"\bas an ai(?: language)? model\b", r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'|no)t|cannot|am unable|won't)\b",
    r"\bi (?:can(?:'|no)t|cannot|won't) (?:help|assist|comply|provide|fulfill) (?:you )?with (?:that|this)\b",
    r"\bi(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply)\b", r"\bi must decline\b",
    r"\bit(?: is|'s) not appropriate for me to\b", r"\bi don't have (?:personal )?(?:opinions|feelings)\b",
)
_REFUSAL = re.compile("|".join(REFUSALS), re.IGNORECASE)
_DANGLING = {"and", "or", "but", "the", "a", "an", "to", "of", "with", "for", "in", "on", "that", "which", "because",
             "is", "are", "was", "were", "be", "by", "as", "at", "from", "if", "then", "so", "than", "this", "these", "my", "your"}
STOPWORDS = {
    "en": "the and is are of to in that it for was on with as you this be have not but what",
    "fr": "le la les et est des une un du que pour dans pas qui sur au avec ce sont vous",
    "de": "der die und das ist nicht ein eine zu den mit sich auf für ich sie es auch von",
    "es": "el la los las y es que de en un una por para con no se del al lo como",
    "it": "il la le e di che è un una per non con sono del della gli nel anche come",
    "pt": "o a os as e é que de em um uma para com não do da no na se por",
    "nl": "de het een en is van dat die niet in op te zijn met voor ook maar",
}
_STOP = {lang: set(ws.split()) for lang, ws in STOPWORDS.items()}


def script_of(text: str) -> str | None:
    """The dominant writing system of the letters: latin, cyrillic, greek, arabic, hebrew, cjk, hangul, ..."""
    text = text[:2000]
    if text.isascii():  # the common case, without a per-character look-up
        return "latin" if any(ch.isalpha() for ch in text) else None
    counts: Counter[str] = Counter(_char_script(ch) for ch in text if ch.isalpha())
    if not counts:
        return None
    script, n = counts.most_common(1)[0]
    return script if n >= 0.6 * sum(counts.values()) else None


@functools.lru_cache(maxsize=65536)
def _char_script(ch: str) -> str:
    first = unicodedata.name(ch, "").split(" ")[0]
    return "cjk" if first in ("CJK", "HIRAGANA", "KATAKANA") else first.lower()


def detect_language(text: str, min_hits: int = 3) -> str | None:
    """A light language guess: the script for non-Latin text, else the language whose stopwords are
    most frequent (needs `min_hits` stopwords and a clear winner). None when unsure."""
    script = script_of(text)
    if script != "latin":
        return script
    ws = words(text[:4000])
    hits = Counter({lang: sum(1 for w in ws if w in stop) for lang, stop in _STOP.items()})
    (best, n), *rest = hits.most_common(2)
    if n < min_hits or (rest and rest[0][1] * 1.5 > n):
        return None
    return best


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    ws = words(text)
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def is_truncated(answer: str) -> bool:
    """Ends mid-sentence: unclosed code fence, open bracket, or a trailing comma/colon/connective."""
    a = answer.rstrip()
    if not a:
        return False
    if a.count("```") % 2 == 1 or a.count("(") > a.count(")") + 1:
        return True
    if a[-1] in ",;:-([{":
        return True
    last = words(a[-40:])
    return bool(last) and a[-1].isalpha() and last[-1] in _DANGLING and len(words(a)) >= 3


def is_refusal(answer: str) -> bool:
    return bool(_REFUSAL.search(answer[:600]))


def repeats_question(question: str, answer: str) -> bool:
    q, a = norm_text(question), norm_text(answer)
    if not q or not a:
        return False
    if a == q:
        return True
    qw, aw = set(words(q)), set(words(a))
    return len(aw) >= 3 and len(qw & aw) / len(qw | aw) >= 0.9


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_answer_chars: int = Field(1, ge=0, description="answers shorter than this (after stripping) are removed")
    min_answer_words: int = Field(0, ge=0, description="answers with fewer words are removed (0 = off)")
    max_answer_words: int | None = Field(None, ge=1, description="answers with more words are removed (none = off)")
    max_total_chars: int | None = Field(None, ge=1, description="rows whose texts total more characters are removed")
    truncated: bool = Field(True, description="remove answers that end mid-sentence")
    repeats_question: bool = Field(True, description="remove answers that (nearly) repeat the question")
    max_repeated_ngram_ratio: float = Field(0.5, ge=0.0, le=1.0, description="remove answers whose share of repeated word 3-grams is higher")
    refusals: bool = Field(True, description="remove refusal boilerplate ('As an AI language model...')")
    language_mismatch: bool = Field(True, description="remove answers in another language or script than the question")


def exchanges(item: Item) -> list[tuple[str, str]]:
    """(question, answer) pairs: each assistant turn with the user text before it."""
    pairs, question = [], ""
    for slot in item.slots:
        if slot.role == "user":
            question = (question + "\n" + slot.text) if question else slot.text
        elif slot.role in ("assistant", "chosen", "text"):
            pairs.append((question, slot.text))
            question = ""
    return pairs


def check_exchange(question: str, answer: str, cfg: QualityConfig) -> str | None:
    """The first rule this exchange fails, or None."""
    a = answer.strip()
    n_words = len(words(a))
    if not a:
        return "empty answer"
    rules = (
        (len(a) < cfg.min_answer_chars or n_words < cfg.min_answer_words, "too short"),
        (cfg.max_answer_words is not None and n_words > cfg.max_answer_words, "too long"),
        (cfg.refusals and is_refusal(a), "refusal"),
        (cfg.truncated and is_truncated(a), "truncated"),
        (cfg.repeats_question and repeats_question(question, a), "repeats question"),
        (repeated_ngram_ratio(a) > cfg.max_repeated_ngram_ratio and n_words >= 12, "repetitive"),
    )
    for failed, reason in rules:
        if failed:
            return reason
    if cfg.language_mismatch and question and "```" not in a and language_mismatch(question, a):
        return "language mismatch"
    return None


def language_mismatch(question: str, answer: str) -> bool:
    """Different scripts (Cyrillic question, Latin answer), or two confident, different Latin-script languages."""
    sq, sa = script_of(question), script_of(answer)
    if sq and sa and sq != sa:
        return True
    lq, la = detect_language(question), detect_language(answer)
    return bool(lq and la and lq != la)


class QualityStage:
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def __call__(self, item: Item) -> Verdict | None:
        if self.cfg.max_total_chars is not None and sum(len(s.text) for s in item.slots) > self.cfg.max_total_chars:
            return removed("too long", f"more than {self.cfg.max_total_chars} characters")
        for i, (question, answer) in enumerate(exchanges(item)):
            reason = check_exchange(question, answer, self.cfg)
            if reason:
                return removed(reason, f"answer {i + 1}")
        return None
