"""Unicode and whitespace normalisation: NFKC, control characters out, runs of spaces collapsed.

Newlines are kept (answers are often code or lists); tabs and other spaces inside a line collapse to
one space, trailing spaces are stripped per line, and more than two blank lines become two.
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.data.clean.fields import Item, Verdict, changed

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANKS = re.compile(r"\n{3,}")


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nfkc: bool = Field(True, description="apply Unicode NFKC (full-width letters, ligatures, compatibility forms)")
    strip_control: bool = Field(True, description="remove control characters and zero-width marks (keeps \\n)")
    collapse_spaces: bool = Field(True, description="collapse runs of spaces/tabs, strip line ends, at most 2 blank lines")
    strip: bool = Field(True, description="strip leading and trailing whitespace of every text")


def normalize_text(text: str, cfg: NormalizeConfig | None = None) -> str:
    """The normalised form of one text (see NormalizeConfig)."""
    cfg = cfg or NormalizeConfig()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if cfg.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.collapse_spaces:
        text = "\n".join(_SPACES.sub(" ", line).rstrip() for line in text.split("\n"))
        text = _BLANKS.sub("\n\n", text)
    return text.strip() if cfg.strip else text


class NormalizeStage:
    """Rewrites every text slot in place; a row counts as changed when any text changed."""

    def __init__(self, cfg: NormalizeConfig):
        self.cfg = cfg

    def __call__(self, item: Item) -> Verdict | None:
        was_changed = False
        for slot in item.slots:
            new = normalize_text(slot.text, self.cfg)
            if new != slot.text:
                slot.text, was_changed = new, True
        return changed("normalized") if was_changed else None
