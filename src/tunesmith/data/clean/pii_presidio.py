"""Optional PII engine: Microsoft Presidio's analyzer (`pip install 'tunesmith[pii]'`), offline.

Presidio normally loads a spaCy NER model (en_core_web_lg), which is not on PyPI and so cannot be
installed offline. Without `spacy_model` we run it on a blank spaCy English pipeline: every pattern
recognizer works (e-mail, phone via `phonenumbers`, credit card, IBAN, IP, US SSN/ITIN/passport/bank,
UK NHS, crypto wallets, MAC, ...); only the NER entities (PERSON, LOCATION, NRP, ...) need a model.
Name an installed spaCy package (`spacy_model: en_core_web_sm`) to get those too.

The e-mail recognizer validates domains with `tldextract`, which fetches the public-suffix list from
the internet on first use; ours uses the snapshot bundled with tldextract instead (no network).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from tunesmith.errors import TunesmithError

# Presidio entity -> (our kind, placeholder); others become "[ENTITY_NAME]" under their own name.
KNOWN = {
    "EMAIL_ADDRESS": ("email", "[EMAIL]"), "PHONE_NUMBER": ("phone", "[PHONE]"),
    "CREDIT_CARD": ("credit_card", "[CREDIT_CARD]"), "IBAN_CODE": ("iban", "[IBAN]"),
    "IP_ADDRESS": ("ipv4", "[IP_ADDRESS]"),
}
DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN",
                    "US_ITIN", "US_PASSPORT", "US_BANK_NUMBER", "UK_NHS", "CRYPTO", "MAC_ADDRESS")
NER_ENTITIES = ("PERSON", "LOCATION", "NRP")
INSTALL_HINT = ("the presidio PII engine needs presidio-analyzer: pip install 'tunesmith[pii]' "
                "(or use engine: regex, the default, which needs nothing)")


@lru_cache(maxsize=4)
def analyzer(spacy_model: str | None = None):
    """A Presidio AnalyzerEngine on a blank (or the named, installed) spaCy English pipeline; cached."""
    try:
        import spacy
        import tldextract
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import EmailRecognizer
    except ImportError as exc:
        raise TunesmithError(f"{INSTALL_HINT} ({exc})") from None
    if spacy_model is not None and not spacy.util.is_package(spacy_model):
        raise TunesmithError(f"pii spacy_model {spacy_model!r} is not installed; install its wheel, or leave "
                             "spacy_model unset to run Presidio's pattern recognizers on a blank pipeline")
    offline = tldextract.TLDExtract(suffix_list_urls=())  # the bundled public-suffix snapshot, no download

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline(pattern_text).fqdn != ""

    class LocalSpacyEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.load(spacy_model) if spacy_model else spacy.blank("en")}

    engine = LocalSpacyEngine(models=[{"lang_code": "en", "model_name": spacy_model or "blank:en"}])
    engine.load()
    registry = RecognizerRegistry()
    log = logging.getLogger("presidio-analyzer")
    level = log.level
    log.setLevel(logging.ERROR)  # not "recognizer for language 'it' not added" twenty times
    try:
        registry.load_predefined_recognizers(nlp_engine=engine)
    finally:
        log.setLevel(level)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def find_presidio(text: str, entities: list[str], score: float, spacy_model: str | None = None
                  ) -> list[tuple[int, int, str, str]]:
    """Non-overlapping (start, end, kind, placeholder) spans, higher scores and longer spans first."""
    results = analyzer(spacy_model).analyze(text=text, language="en", entities=list(entities), score_threshold=score)
    spans: list[tuple[int, int, str, str]] = []
    for r in sorted(results, key=lambda r: (-r.score, r.start - r.end)):
        if any(r.start < e and s < r.end for s, e, _, _ in spans):
            continue
        kind, placeholder = KNOWN.get(r.entity_type, (r.entity_type.lower(), f"[{r.entity_type}]"))
        spans.append((r.start, r.end, kind, placeholder))
    return sorted(spans)


def redact_presidio(text: str, entities: list[str], score: float, spacy_model: str | None = None
                    ) -> tuple[str, list[str]]:
    """The text with Presidio's findings replaced by placeholders, and the kinds found (one per item)."""
    spans = find_presidio(text, entities, score, spacy_model)
    out, last = [], 0
    for start, end, _, placeholder in spans:
        out += [text[last:start], placeholder]
        last = end
    out.append(text[last:])
    return "".join(out), [kind for _, _, kind, _ in spans]
