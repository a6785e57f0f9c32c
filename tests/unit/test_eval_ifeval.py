"""Every instruction-following check against hand-made passing and failing responses; the bundled prompt set."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.evaluation.ifeval import CHECKS, aggregate, check_instruction, detect_language, loose_variants, score_response
from tunesmith.evaluation.ifeval_prompts import INSTRUCTIONS, make_prompts

# kind, kwargs, a response that follows it, a response that does not
CASES = [
    ("json_format", {}, '{"a": 1, "b": [2]}', "Sure! {\"a\": 1}"),
    ("json_format", {}, '```json\n{"a": 1}\n```', "a: 1"),
    ("word_count", {"relation": "at least", "n": 5}, "one two three four five", "one two three four"),
    ("word_count", {"relation": "less than", "n": 3}, "two words", "now three words"),
    ("sentence_count", {"relation": "at least", "n": 3}, "One. Two! Three?", "One. Two."),
    ("sentence_count", {"relation": "less than", "n": 2}, "Just one sentence.", "First one. Second one."),
    ("paragraph_count", {"n": 2}, "First para.\n\nSecond para.", "Only one paragraph here."),
    ("paragraph_count", {"n": 3}, "a\n***\nb\n***\nc", "a\n\nb"),
    ("bullet_count", {"n": 2}, "Intro\n* first\n* second", "* first\n* second\n* third"),
    ("bullet_count", {"n": 1}, "- only one", "no bullets at all"),
    ("include_keywords", {"keywords": ["river", "lamp"]}, "A lamp by the River.", "A lamp by the sea."),
    ("forbidden_words", {"forbidden": ["very", "nice"]}, "It was everything I wanted.", "It was very good."),
    ("keyword_frequency", {"keyword": "blue", "relation": "at least", "n": 2}, "Blue sky, blue sea.", "A blue sky, bluebells."),
    ("lowercase", {}, "all quiet here, 42.", "All quiet here."),
    ("uppercase", {}, "ALL LOUD HERE!", "ALL LOUD HERe!"),
    ("starts_with", {"phrase": "My answer is"}, "my answer is yes", "Well, my answer is yes"),
    ("ends_with", {"phrase": "That is all."}, "Done. That is all.  ", "That is all. Bye."),
    ("numbered_sections", {"n": 2, "section_word": "SECTION"}, "SECTION 1\nintro\nSECTION 2\nbody", "SECTION 1\nintro\nSECTION 3\nbody"),
    ("placeholders", {"n": 2}, "Send it to [address] by [date].", "Send it to [address] soon."),
    ("title", {}, "<<My Day>>\nIt was fine.", "<My Day>\nIt was fine."),
    ("quotation", {}, '"Wrapped in quotes."', 'Not "wrapped" at all.'),
    ("no_commas", {}, "No commas here at all.", "Yes, there is one."),
    ("postscript", {"marker": "P.S."}, "Body text.\n\nP.S. See you soon.", "Body text. PS see you."),
    ("highlighted_sections", {"n": 2}, "This is *important* and *urgent*.", "This is *important* only."),
    ("letter_frequency", {"letter": "z", "relation": "at least", "n": 3}, "Zebras zigzag lazily.", "Zebras run."),
    ("capital_word_frequency", {"relation": "at least", "n": 2}, "The NASA and ESA teams.", "The NASA team."),
    ("capital_word_frequency", {"relation": "less than", "n": 2}, "Only NASA here.", "NASA ESA JAXA."),
    ("two_responses", {"separator": "******"}, "First answer.\n******\nSecond answer.", "First answer.\n******\nFirst answer."),
    ("repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Write a poem. Roses are red.", "Roses are red. Write a poem."),
    ("constrained_response", {"options": ["My answer is yes.", "My answer is no."]}, "My answer is no.", "Perhaps."),
    ("end_with_question", {}, "Do you agree?", "I agree."),
    ("response_language", {"language": "fr"}, "Je pense que le chat est dans la maison et que nous sommes là.", "I think the cat is in the house."),
    ("response_language", {"language": "de"}, "Ich glaube, dass die Katze nicht in dem Haus ist und das ist gut.", "Je pense que le chat est ici."),
]


def test_there_are_at_least_twenty_kinds_and_every_kind_has_cases():
    assert len(CHECKS) >= 20
    assert {kind for kind, *_ in CASES} == set(CHECKS)


@pytest.mark.parametrize(("kind", "kwargs", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_check_passes_and_fails_on_hand_made_examples(kind, kwargs, good, bad):
    instruction = {"kind": kind, **kwargs}
    assert check_instruction(good, instruction) is True
    assert check_instruction(bad, instruction) is False


def test_empty_response_fails_strict():
    assert check_instruction("   ", {"kind": "no_commas"}) is False


def test_loose_removes_markdown_and_first_or_last_line():
    # strict fails: the chatty first line breaks "starts with"; loose drops it as IFEval does
    response = "Sure, here you go:\nMy answer is yes."
    inst = {"kind": "starts_with", "phrase": "My answer is"}
    assert not check_instruction(response, inst) and check_instruction(response, inst, loose=True)
    # asterisks break "ends with"; loose removes them
    inst = {"kind": "ends_with", "phrase": "That is all."}
    assert not check_instruction("**That is all.**", inst) and check_instruction("**That is all.**", inst, loose=True)
    assert loose_variants("a\n*b*\nc") == ["a\n*b*\nc", "a\nb\nc", "*b*\nc", "b\nc", "a\n*b*", "a\nb", "*b*", "b"]


def test_prompt_and_instruction_level_accuracy():
    instructions = [[{"kind": "no_commas"}, {"kind": "lowercase"}], [{"kind": "uppercase"}]]
    scored = [score_response("all fine, mostly", instructions[0]), score_response("LOUD", instructions[1])]
    assert scored[0]["strict"] == [False, True] and scored[0]["prompt_strict"] == 0.0 and scored[0]["instruction_strict"] == 0.5
    agg = aggregate(scored, instructions)
    assert agg["prompt_strict"] == 0.5  # one of two prompts fully followed
    assert agg["instruction_strict"] == pytest.approx(2 / 3)  # two of three instructions
    assert agg["per_kind_strict"] == {"lowercase": 1.0, "no_commas": 0.0, "uppercase": 1.0}


def test_bad_instructions_are_clear_errors():
    with pytest.raises(TunesmithError, match="unknown instruction kind 'shout'"):
        check_instruction("x", {"kind": "shout"})
    with pytest.raises(TunesmithError, match="wrong arguments"):
        check_instruction("x", {"kind": "word_count", "count": 3})


def test_language_heuristic():
    assert detect_language("The cat is on the mat and it is happy.") == "en"
    assert detect_language("El perro y el gato son amigos de la casa.") == "es"
    assert detect_language("12345") is None


def test_bundled_prompt_set_is_deterministic_covers_kinds_and_is_checkable():
    rows = make_prompts(60, seed=0)
    assert rows == make_prompts(60, seed=0) and rows != make_prompts(60, seed=1)
    assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
    kinds = {i["kind"] for r in rows for i in r["instructions"]}
    assert kinds == set(INSTRUCTIONS) and len(kinds) >= 20
    for row in rows:  # every generated instruction has the arguments its check takes
        score_response("A response.", row["instructions"])
        assert 1 <= len(row["instructions"]) <= 2
    assert rows[0]["prompt"].startswith(("Write", "Explain", "Give", "Describe", "Summarise"))
