"""PII and secret redaction: e-mails, phone numbers, IPv4/IPv6, credit cards (Luhn), IBANs (ISO 13616
mod-97), API keys and bearer tokens, each replaced by a placeholder such as [EMAIL].

Every detector is a regex plus a validator, so look-alikes stay: card-length digit runs failing Luhn
(order numbers), ISBNs, dates, version strings (`v1.2.3.4`, `version 10.0.0.1`), short digit runs.
Detectors run in priority order and a span claimed by one is not matched again by a later one.

`engine: presidio` (or `both`: ours first, then Presidio on what is left) uses Microsoft Presidio when
installed (`pip install 'tunesmith[pii]'`), offline; see pii_presidio.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.data.clean.fields import Item, Verdict, changed


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) checksum, as on payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1."""
    s = iban.replace(" ", "").upper()
    if not (15 <= len(s) <= 34):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def isbn13_ok(digits: str) -> bool:
    if len(digits) != 13 or digits[:3] not in ("978", "979"):
        return False
    return sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(digits)) % 10 == 0


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


_BEFORE = 24  # characters of left context a validator may look at


def _card(m: re.Match, text: str) -> bool:
    d = _digits(m.group())
    before = text[max(0, m.start() - _BEFORE):m.start()].lower()
    return 13 <= len(d) <= 19 and luhn_ok(d) and not isbn13_ok(d) and "isbn" not in before


def _ipv4(m: re.Match, text: str) -> bool:
    before = text[max(0, m.start() - 12):m.start()].lower()
    after = text[m.end():m.end() + 2]
    if re.search(r"\b(?:v|version|ver\.?|release|build)\s*$", before) or re.match(r"\.\d", after):
        return False  # a version string, or a longer dotted number
    try:
        ipaddress.IPv4Address(m.group())
    except ValueError:
        return False
    return True


def _ipv6(m: re.Match, text: str) -> bool:
    s = m.group()
    if s.count(":") < 2 or not re.search(r"\d", s) or not ("::" in s or s.count(":") == 7):
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _phone(m: re.Match, text: str) -> bool:
    d = _digits(m.group())
    if not 10 <= len(d) <= 15 or isbn13_ok(d):
        return False
    before = text[max(0, m.start() - _BEFORE):m.start()].lower()
    return not re.search(r"(isbn|order|invoice|ref|id|no\.|#)[\s:#-]*$", before)


def _always(m: re.Match, text: str) -> bool:
    return True


@dataclass(frozen=True)
class Detector:
    kind: str
    placeholder: str
    pattern: re.Pattern
    valid: Callable[[re.Match, str], bool] = _always
    hint: re.Pattern | None = None  # a cheap pre-check: texts without it cannot match


_DIGIT = re.compile(r"\d")
DETECTORS: tuple[Detector, ...] = (  # priority order
    Detector("secret", "[SECRET]", re.compile(
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,})")),
    Detector("bearer", "Bearer [SECRET]", re.compile(r"\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{15,}[A-Za-z0-9_~+/=-]")),
    Detector("email", "[EMAIL]", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), hint=re.compile("@")),
    Detector("iban", "[IBAN]", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
             lambda m, t: iban_ok(m.group()), _DIGIT),
    Detector("credit_card", "[CREDIT_CARD]", re.compile(r"(?<![\d.+-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card, _DIGIT),
    Detector("ipv6", "[IP_ADDRESS]", re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])"), _ipv6, re.compile(":")),
    Detector("ipv4", "[IP_ADDRESS]", re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)"), _ipv4, re.compile(r"\d\.\d")),
    Detector("phone", "[PHONE]", re.compile(
        r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])(?![ .-]\d)"
        r"|(?<![\w+])\+\d{8,14}\b"), _phone, _DIGIT),
)
KINDS = tuple(dict.fromkeys(d.kind for d in DETECTORS))


def find_pii(text: str, kinds: tuple[str, ...] | list[str] = KINDS) -> list[tuple[int, int, Detector]]:
    """Non-overlapping (start, end, detector) spans, earlier detectors winning overlaps."""
    spans: list[tuple[int, int, Detector]] = []
    for det in DETECTORS:
        if det.kind not in kinds or (det.hint is not None and not det.hint.search(text)):
            continue
        for m in det.pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e, _ in spans) or not det.valid(m, text):
                continue
            spans.append((m.start(), m.end(), det))
    return sorted(spans, key=lambda s: s[0])


def redact(text: str, kinds: tuple[str, ...] | list[str] = KINDS) -> tuple[str, list[str]]:
    """The text with every detected item replaced by its placeholder, and the kinds found (one per item)."""
    spans = find_pii(text, kinds)
    if not spans:
        return text, []
    out, last = [], 0
    for start, end, det in spans:
        out += [text[last:start], det.placeholder]
        last = end
    out.append(text[last:])
    return "".join(out), [det.kind for _, _, det in spans]


class PIIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = Field(list(KINDS), description=f"what to redact: any of {', '.join(KINDS)}")
    action: Literal["redact", "remove"] = Field("redact", description="replace items by placeholders, or remove the row")
    engine: Literal["regex", "presidio", "both"] = Field(
        "regex", description="regex: built-in detectors with checksums (default); presidio: Microsoft Presidio "
        "(pip install 'tunesmith[pii]'); both: built-in first, then Presidio on the rest")
    presidio_entities: list[str] | None = Field(
        None, description="Presidio entity names to find (default: e-mail, phone, card, IBAN, IP, US SSN/ITIN/"
        "passport/bank, UK NHS, crypto, MAC; plus PERSON, LOCATION, NRP when spacy_model is set)")
    presidio_score: float = Field(0.4, ge=0.0, le=1.0, description="lowest Presidio confidence that counts")
    spacy_model: str | None = Field(None, description="an installed spaCy package for Presidio's NER "
                                    "(names, places); default: a blank pipeline, pattern recognizers only")

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown PII kind(s) {unknown}; known: {', '.join(KINDS)}")
        return kinds


class PIIStage:
    def __init__(self, cfg: PIIConfig):
        self.cfg = cfg
        self.found: dict[str, int] = {}  # kind -> items redacted
        self.redactors: list[Callable[[str], tuple[str, list[str]]]] = []
        if cfg.engine in ("regex", "both"):
            self.redactors.append(lambda text: redact(text, cfg.kinds))
        if cfg.engine in ("presidio", "both"):
            from tunesmith.data.clean import pii_presidio as pp

            entities = cfg.presidio_entities or [*pp.DEFAULT_ENTITIES, *(pp.NER_ENTITIES if cfg.spacy_model else ())]
            pp.analyzer(cfg.spacy_model)  # fail now (not installed, unknown model), before any row is read
            self.redactors.append(lambda text: pp.redact_presidio(text, entities, cfg.presidio_score, cfg.spacy_model))

    def _redact(self, text: str) -> tuple[str, list[str]]:
        found: list[str] = []
        for fn in self.redactors:
            text, kinds = fn(text)
            found += kinds
        return text, found

    def __call__(self, item: Item) -> Verdict | None:
        kinds_in_row: list[str] = []
        for slot in item.slots:
            new, kinds = self._redact(slot.text)
            if kinds:
                kinds_in_row += kinds
                if self.cfg.action == "redact":
                    slot.text = new
        for k in kinds_in_row:
            self.found[k] = self.found.get(k, 0) + 1
        if not kinds_in_row:
            return None
        reason = "pii: " + ", ".join(sorted(set(kinds_in_row)))
        return Verdict(True, reason) if self.cfg.action == "remove" else changed(reason)

    def stats(self) -> dict:
        return {"items_found": dict(sorted(self.found.items()))}
