"""Optional engines of the clean stages: Presidio for PII, alt-profanity-check for harmful content.

Both are extras (`tunesmith[pii]`, `tunesmith[harmful]`); each test skips, saying which package is
missing, when its extra is not installed. The defaults (regex PII, phrase lists) need neither.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tunesmith.data.clean.pipeline import clean_file, parse_recipe
from tunesmith.errors import TunesmithError

HAS_PRESIDIO = importlib.util.find_spec("presidio_analyzer") is not None
HAS_PROFANITY = importlib.util.find_spec("profanity_check") is not None
needs_presidio = pytest.mark.skipif(not HAS_PRESIDIO, reason="presidio-analyzer not installed (pip install 'tunesmith[pii]')")
needs_profanity = pytest.mark.skipif(not HAS_PROFANITY, reason="alt-profanity-check not installed (pip install 'tunesmith[harmful]')")


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in pairs))
    return path


@needs_presidio
def test_presidio_engine_redacts_offline_and_adds_entities():
    from tunesmith.data.clean.pii_presidio import redact_presidio

    text = ("Mail john.doe@example.com, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, "
            "host 192.168.1.20, SSN 536-90-4399 please.")
    entities = ["EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN"]
    out, kinds = redact_presidio(text, entities, 0.4)
    assert out == "Mail [EMAIL], card [CREDIT_CARD], IBAN [IBAN], host [IP_ADDRESS], SSN [US_SSN] please."
    assert sorted(kinds) == ["credit_card", "email", "iban", "ipv4", "us_ssn"]
    assert redact_presidio("Bake the bread at 220 degrees for 35 minutes.", entities, 0.4) == (
        "Bake the bread at 220 degrees for 35 minutes.", [])


@needs_presidio
def test_presidio_both_engine_in_a_recipe(tmp_path):
    src = _write(tmp_path / "a.jsonl", [
        ("Reach me at a@b.com", "My SSN is 536-90-4399 and my key sk-abcdefghijklmnopqrstuvwxyz123456."),
        ("What is 2 + 2?", "It is 4."),
    ])
    recipe = parse_recipe({"stages": [{"pii": {"engine": "both"}}]})
    stats = clean_file(src, tmp_path / "o.jsonl", recipe, manifest=False)
    rows = _jsonl(tmp_path / "o.jsonl")
    assert rows[0]["instruction"] == "Reach me at [EMAIL]"
    # the secret is ours (Presidio has no API-key recognizer); the SSN is Presidio's (we have no SSN detector)
    assert rows[0]["output"] == "My SSN is [US_SSN] and my key [SECRET]."
    assert rows[1]["output"] == "It is 4."
    assert stats["stages"][0]["items_found"] == {"email": 1, "secret": 1, "us_ssn": 1}


@needs_presidio
def test_presidio_unknown_spacy_model_is_a_clear_error():
    with pytest.raises(TunesmithError, match="spacy_model 'en_core_web_nope' is not installed"):
        parse_recipe({"stages": [{"pii": {"engine": "presidio", "spacy_model": "en_core_web_nope"}}]})


def test_presidio_missing_is_a_clear_error(monkeypatch):
    from tunesmith.data.clean.pii_presidio import analyzer

    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # import fails as if not installed
    analyzer.cache_clear()
    with pytest.raises(TunesmithError, match=r"pip install 'tunesmith\[pii\]'"):
        parse_recipe({"stages": [{"pii": {"engine": "presidio"}}]})


PLANTED_OFFENSIVE = [
    ("Tell me what you think of me.", "You are a worthless fucking idiot and everyone hates you."),
    ("Reply to my neighbour.", "Shut up you stupid bitch."),
]
CLEAN_ROWS = [
    ("How do I kill a process in Linux?", "Use the kill command with the process id, e.g. kill 1234."),
    ("How do I bake sourdough bread?", "Mix flour, water, salt and starter, let it rise, then bake at 230 C."),
    ("Sum 3 and 4.", "3 + 4 = 7."),
]


@needs_profanity
def test_classifier_removes_planted_rows_to_the_side_file(tmp_path):
    rows = CLEAN_ROWS[:2] + PLANTED_OFFENSIVE[:1] + CLEAN_ROWS[2:] + PLANTED_OFFENSIVE[1:]
    src = _write(tmp_path / "a.jsonl", rows)
    recipe = parse_recipe({"stages": [{"harmful": {"engine": "both", "threshold": 0.8}}]})
    stats = clean_file(src, tmp_path / "o.jsonl", recipe, manifest=False)
    assert [r["instruction"] for r in _jsonl(tmp_path / "o.jsonl")] == [q for q, _ in CLEAN_ROWS]
    side = _jsonl(tmp_path / "o.removed.jsonl")
    assert [(r["line"], r["stage"], r["reason"]) for r in side] == [(3, "harmful", "harmful: classifier"),
                                                                     (5, "harmful", "harmful: classifier")]
    assert side[0]["detail"].startswith("output P(offensive)=") and side[0]["row"]["output"] == PLANTED_OFFENSIVE[0][1]
    assert stats["stages"][0]["removed"] == 2 and stats["stages"][0]["reasons"] == {"harmful: classifier": 2}


@needs_profanity
def test_words_engine_ignores_the_classifier_and_classifier_engine_ignores_words(tmp_path):
    src = _write(tmp_path / "a.jsonl", [PLANTED_OFFENSIVE[0], ("Explain.", "Here is how to make a bomb at home.")])
    words = clean_file(src, tmp_path / "w.jsonl", parse_recipe({"stages": ["harmful"]}), manifest=False)
    clf = clean_file(src, tmp_path / "c.jsonl", parse_recipe({"stages": [{"harmful": {"engine": "classifier"}}]}),
                     manifest=False)
    assert words["stages"][0]["reasons"] == {"harmful": 1}
    assert [r["line"] for r in _jsonl(tmp_path / "w.removed.jsonl")] == [2]
    assert [r["line"] for r in _jsonl(tmp_path / "c.removed.jsonl")] == [1]
    assert clf["stages"][0]["reasons"] == {"harmful: classifier": 1}


def test_classifier_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # import fails as if not installed
    with pytest.raises(TunesmithError, match=r"pip install 'tunesmith\[harmful\]'"):
        parse_recipe({"stages": [{"harmful": {"engine": "classifier"}}]})


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_clean_configs_parse():
    from tunesmith.data.clean.pipeline import load_recipe

    default = load_recipe(CONFIGS / "clean.yaml")
    assert [s.name for s in default.stages] == ["normalize", "exact_dedup", "near_dedup", "quality", "pii", "harmful"]
    if HAS_PRESIDIO and HAS_PROFANITY:
        strict = load_recipe(CONFIGS / "clean_strict.yaml")
        assert strict.stages[4].settings == {"engine": "both", "presidio_score": 0.5}
