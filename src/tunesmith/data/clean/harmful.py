"""Harmful-content filter: a small bundled list of phrases (weapons, self-harm encouragement, sexual
content involving minors, violent extremism), matched on word boundaries, case-insensitively.

The list is deliberately short and conservative (phrases, not single ambiguous words) so ordinary
rows survive; extend it with `words` or `words_file` (one phrase a line, # comments), or turn the
bundled list off with `bundled: false`.

`engine: classifier` (or `both`) adds a classifier that ships its weights: `alt-profanity-check`
(`pip install 'tunesmith[harmful]'`), a calibrated linear SVM over a bag of words, trained on ~200k
human-labelled clean/profane texts (per its README). It scores each checked text's probability of being
offensive; a row with one at or above `threshold` is removed. It catches abuse and profanity the phrase
list does not, not dangerous advice (that stays the phrase list's job), so `both` is the broadest setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.data.clean.fields import Item, Verdict, removed
from tunesmith.errors import DataError, TunesmithError

BUNDLED = (
    "how to make a bomb", "build a pipe bomb", "make a pipe bomb", "make napalm", "synthesize sarin", "make ricin",
    "weaponize anthrax", "cook meth", "synthesize methamphetamine", "kill yourself", "you should kill yourself",
    "go kill yourself", "how to commit suicide", "best way to self-harm", "child pornography", "child porn",
    "sexual content involving minors", "sex with a minor", "heil hitler", "white power", "gas the jews",
    "ethnic cleansing is good", "how to poison someone", "untraceable poison", "hire a hitman", "buy an unregistered gun",
)


def load_phrases(path: str | Path) -> list[str]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(p, None, "words_file", "file not found") from None
    except UnicodeDecodeError:
        raise DataError(p, None, "words_file", "not valid UTF-8") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


class HarmfulConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundled: bool = Field(True, description="use the bundled phrase list")
    words: list[str] = Field(default_factory=list, description="extra words or phrases to filter")
    words_file: str | None = Field(None, description="a file with one word or phrase a line (# comments)")
    roles: list[str] = Field(["assistant", "chosen", "text", "user"], description="which turns are checked")
    action: Literal["remove", "flag"] = Field("remove", description="remove the row, or keep it and count it")
    engine: Literal["words", "classifier", "both"] = Field(
        "words", description="words: phrase lists (default); classifier: alt-profanity-check "
        "(pip install 'tunesmith[harmful]'); both: phrase lists, then the classifier")
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="classifier: remove when P(offensive) >= this")


def profanity_classifier():
    """alt-profanity-check's predict_prob(texts) -> P(offensive) per text, or a clear error when missing."""
    try:
        from profanity_check import predict_prob
    except ImportError as exc:
        raise TunesmithError("the harmful classifier needs alt-profanity-check: pip install 'tunesmith[harmful]' "
                             f"(or use engine: words, the default, which needs nothing) ({exc})") from None
    return predict_prob


class HarmfulStage:
    def __init__(self, cfg: HarmfulConfig):
        self.cfg = cfg
        phrases = list(BUNDLED if cfg.bundled else ()) + cfg.words
        if cfg.words_file:
            phrases += load_phrases(cfg.words_file)
        body = "|".join(sorted((re.escape(p.lower()).replace(r"\ ", r"\s+") for p in phrases), key=len, reverse=True))
        use_words = cfg.engine in ("words", "both")
        self.pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE) if phrases and use_words else None
        self.classify = profanity_classifier() if cfg.engine in ("classifier", "both") else None
        self.flagged = 0

    def match(self, text: str) -> str | None:
        m = self.pattern.search(text) if self.pattern else None
        return m.group().lower() if m else None

    def _why(self, item: Item) -> tuple[str, str] | None:
        """(reason, detail) for the first checked slot that is caught, or None."""
        slots = [s for s in item.slots if s.role in self.cfg.roles]
        for slot in slots:
            if hit := self.match(slot.text):
                return "harmful", f"{slot.path} contains {hit!r}"
        if self.classify is not None and slots:
            probs = self.classify([s.text for s in slots])
            for slot, p in zip(slots, probs):
                if p >= self.cfg.threshold:
                    return "harmful: classifier", f"{slot.path} P(offensive)={float(p):.3f} >= {self.cfg.threshold}"
        return None

    def __call__(self, item: Item) -> Verdict | None:
        why = self._why(item)
        if why is None:
            return None
        if self.cfg.action == "flag":
            self.flagged += 1
            return None
        return removed(*why)

    def stats(self) -> dict:
        return {"flagged": self.flagged} if self.cfg.action == "flag" else {}
