"""Quality rules, normalisation, language guess and the harmful-content filter, one behaviour each."""

from __future__ import annotations

from tunesmith.data.clean.fields import Item, slots_of
from tunesmith.data.clean.harmful import HarmfulConfig, HarmfulStage
from tunesmith.data.clean.normalize import normalize_text
from tunesmith.data.clean.quality import (QualityConfig, QualityStage, check_exchange, detect_language, is_truncated,
                                          repeated_ngram_ratio)

CFG = QualityConfig()


def test_normalize_text():
    assert normalize_text("Ｈｅｌｌｏ\u200b  wor\x07ld\t!  \r\n\n\n\n  next ﬁne ") == "Hello world !\n\n next fine"
    assert normalize_text("keep\n  indentation?") == "keep\n indentation?"  # runs collapse to one space


def test_rules_name_the_first_failure():
    cases = {
        ("Q?", "   "): "empty answer",
        ("Name a colour.", "The colour I like most is"): "truncated",
        ("Show code.", "```python\nprint(1)\n"): "truncated",
        ("Continue.", "First, we add flour, then"): "truncated",  # a trailing connective
        ("Hi", "As an AI language model, I do not have feelings."): "refusal",
        ("What is 2+2?", "what is 2+2?"): "repeats question",
        ("Write.", "the cat sat on the mat " * 5): "repetitive",
        ("Wie spät ist es und wo ist der Bahnhof?", "It is five o'clock and the station is on the left of the road."): "language mismatch",
        ("Какой сегодня день?", "Today is Monday."): "language mismatch",
        ("What is 2+2?", "4"): None,
        ("Translate 'good morning' to French.", "Bonjour."): None,  # too short to guess a language
    }
    for (q, a), expected in cases.items():
        assert check_exchange(q, a, CFG) == expected, (q, a)


def test_thresholds_are_configurable():
    strict = QualityConfig(min_answer_words=3, max_answer_words=6, truncated=False)
    assert check_exchange("Q?", "Yes.", strict) == "too short"
    assert check_exchange("Q?", "one two three four five six seven", strict) == "too long"
    assert check_exchange("Q?", "It is the", strict) is None
    assert repeated_ngram_ratio("a b c a b c a b c") == 1 - 3 / 7
    assert not is_truncated("Done.") and is_truncated("We need:")


def test_language_guess():
    assert detect_language("The weather is nice and the sun is out today") == "en"
    assert detect_language("Le temps est beau et le soleil est dans le ciel") == "fr"
    assert detect_language("这是一个中文句子") == "cjk"
    assert detect_language("ok") is None


def test_every_turn_of_a_conversation_is_checked():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                        {"role": "user", "content": "Tell me more"}, {"role": "assistant", "content": ""}]}
    v = QualityStage(CFG)(Item(1, row, "messages", slots_of(row, "messages")))
    assert v.removed and v.reason == "empty answer" and v.detail == "answer 2"


def test_harmful_filter(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("# my list\nforbidden topic\n")
    stage = HarmfulStage(HarmfulConfig(words=["Zorblax"], words_file=str(words)))
    row = lambda a: {"instruction": "Tell me", "output": a}  # noqa: E731
    verdict = lambda a: stage(Item(1, row(a), "alpaca", slots_of(row(a), "alpaca")))  # noqa: E731
    assert verdict("Here is how to make a bomb quickly").reason == "harmful"
    assert verdict("about the FORBIDDEN   topic").detail == "output contains 'forbidden   topic'"
    assert verdict("zorblax!").removed
    assert verdict("A bomb squad defused it; the chemistry lesson was on kill switches.") is None
    assert HarmfulStage(HarmfulConfig(bundled=False)).match("how to make a bomb") is None
