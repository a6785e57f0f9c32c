"""Parsers and filters of the synth methods: each rejection reason on a planted example."""

from __future__ import annotations

import pytest

from tunesmith.data.synth.constitutional import load_principles
from tunesmith.data.synth.evol_instruct import (EVOLUTIONS, choose_evolution, equality_prompt, evolution_problem,
                                               evolution_prompt, parse_equality, response_problem)
from tunesmith.data.synth.pipeline import item_from_row, strip_label
from tunesmith.data.synth.rlaif import combine, parse_verdict
from tunesmith.data.synth.self_instruct import build_prompt, load_seed_tasks, parse_tasks, quality_problem
from tunesmith.errors import DataError

GOOD = {"instruction": "List three uses of baking soda at home.", "input": "", "output": "Cleaning, deodorising, baking."}


def test_parse_tasks_reads_every_block_and_noinput():
    text = ("Instruction: Sort the numbers.\nInput: 3, 1, 2\nOutput: 1, 2, 3\n\nTask 10\n"
            "Instruction: Name a mammal that lays eggs.\nInput: <noinput>\nOutput: The platypus.\nTask 11\nInstruction: cut")
    assert parse_tasks(text) == [
        {"instruction": "Sort the numbers.", "input": "3, 1, 2", "output": "1, 2, 3"},
        {"instruction": "Name a mammal that lays eggs.", "input": "", "output": "The platypus."},
    ]
    assert parse_tasks("no format here") == []


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"instruction": "Sort these."}, "instruction length"),
    ({"instruction": "Draw a picture of a cat sitting on a mat."}, "unsupported modality"),
    ({"instruction": "- List three uses of baking soda."}, "starts with punctuation"),
    ({"instruction": "Énumérez trois usages du bicarbonate de soude."}, "non-English start"),
    ({"output": "  "}, "empty output"),
    ({"output": "List three uses of baking soda at home."}, "copies the prompt"),
    ({"output": "word " * 401}, "output too long"),
])
def test_quality_filters(change, reason):
    assert quality_problem(GOOD | change) == reason


def test_seed_tasks_and_prompt():
    seeds = load_seed_tasks()
    assert len(seeds) == 20 and all(quality_problem(s) is None for s in seeds)
    prompt = build_prompt(seeds[:3])
    assert prompt.count("Instruction:") == 3 and prompt.endswith("Task 4\n") and "Input: <noinput>" in prompt
    assert parse_tasks(prompt.split("Task 1\n", 1)[1])[0]["instruction"] == seeds[0]["instruction"]


@pytest.mark.parametrize("evolved, kind, reason", [
    ("Explain photosynthesis in three steps, naming the two stages and one input of each.", "deepen", None),
    ("Explain photosynthesis.", "deepen", "unchanged"),
    ("explain   PHOTOSYNTHESIS!", "constraints", "unchanged"),
    ("Rewrite the #Given Prompt# to be harder", "reasoning", "template leftovers"),
    ("Explain it.", "deepen", "too short"),
    ("", "breadth", "empty"),
    ("Why do leaves change colour?", "breadth", None),
])
def test_evolution_elimination(evolved, kind, reason):
    assert evolution_problem("Explain photosynthesis.", evolved, kind) == reason


def test_evolution_prompts_and_choice():
    assert "Please replace general concepts with more specific concepts." in evolution_prompt("concretize", "X?")
    assert evolution_prompt("breadth", "X?").endswith("#Given Prompt#:\nX?\n#Created Prompt#:\n")
    picks = {choose_evolution(f"id{i}", 0) for i in range(50)}
    assert picks == set(EVOLUTIONS) and choose_evolution("id1", 0) == choose_evolution("id1", 0)
    assert response_problem("I'm sorry, I can't do that.") == "refusal response"
    assert response_problem("the of and ...") == "empty response" and response_problem("Paris is the capital.") is None


@pytest.mark.parametrize("text, verdict", [
    ("A is better because ... [[A]]", "A"), ("first [[A]] then on reflection [[B]]", "B"),
    ("[[C]]", "C"), ("Final verdict: B", "B"), ("b.", "B"), ("I cannot decide", None), (None, None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_combine_both_orders():
    assert combine("A", "B") == 0 and combine("B", "A") == 1  # consistent: same answer wins in both orders
    assert combine("A", "A") is None and combine("B", "B") is None  # position bias -> tie
    assert combine("C", "C") is None and combine("A", "C") is None


def test_items_from_every_row_shape():
    a = item_from_row({"instruction": "Do X", "input": "data", "output": "done"}, "f", 1, "p")
    assert a.messages == [{"role": "user", "content": "Do X\n\ndata"}] and a.answer == "done"
    b = item_from_row({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "f", 2, "p")
    assert b.prompt == "hi" and b.answer == "yo"
    assert item_from_row({"prompt": "hi"}, "f", 3, "p").id == item_from_row({"prompt": "hi"}, "g", 9, "p").id
    with pytest.raises(DataError, match="f:4: field 'messages'"):
        item_from_row({"messages": [{"role": "assistant", "content": "x"}]}, "f", 4, "p")
    assert strip_label("#Rewritten Prompt#:\n  Do Y", ("#Rewritten Prompt#:",)) == "Do Y"


def test_principles_bundled_and_bad_file(tmp_path):
    assert [p.name for p in load_principles()][:3] == ["harmless", "helpful", "honest"]
    bad = tmp_path / "p.yaml"
    bad.write_text("- name: x\n  critique: c\n")
    with pytest.raises(DataError, match=r"p.yaml: field '\[0\]'.*revision"):
        load_principles(bad)


def test_custom_seed_file(tmp_path):
    good = tmp_path / "seeds.jsonl"
    good.write_text('{"instruction": "Name two oceans of the world.", "output": "Atlantic, Pacific."}\n')
    assert load_seed_tasks(good) == [{"instruction": "Name two oceans of the world.", "input": "", "output": "Atlantic, Pacific."}]
    good.write_text('{"instruction": "Name two oceans."}\n{"prompt": "x"}\n')
    with pytest.raises(DataError, match="seeds.jsonl:2: field 'instruction'"):
        load_seed_tasks(good)


def test_parse_instructions_two_step():
    from tunesmith.data.synth.self_instruct import build_instruction_prompt, parse_instructions

    text = "Task 9: Name a river in Africa.\nTask 10: Instruction: Write a limerick about cats.\n3) Sort the list."
    assert parse_instructions(text) == ["Name a river in Africa.", "Write a limerick about cats.", "Sort the list."]
    assert parse_instructions('New task: "Plan a picnic for four people."\nSure!') == ["Plan a picnic for four people."]
    assert parse_instructions("  \n ") == [] and len(parse_instructions("1. a\n2. b\n3. c\n4. d\n5. e")) == 4
    from tunesmith.data.synth.self_instruct import ECHO
    from tunesmith.data.synth.rouge import rouge_l

    assert rouge_l("A new task that differs from all of these in topic and wording.", ECHO) >= 0.5  # rejected as an echo
    assert rouge_l("Name a river in Africa.", ECHO) < 0.5
    prompt = build_instruction_prompt(load_seed_tasks()[:2])
    assert prompt.count("\nTask ") == 2 and "Write task 3:" in prompt


def test_equality_judgement_and_response_rules():
    prompt = equality_prompt("Explain tides.", "Explain tides in two steps.")
    assert "The First Prompt: Explain tides.\nThe Second Prompt: Explain tides in two steps.\nYour Judgement" in prompt
    assert [parse_equality(t) for t in ("Equal", "equal.", "Not Equal", "NOT EQUAL.", "They are unequal", "Hmm", None)] == [
        True, True, False, False, False, None, None]
    instruction = "Describe how tides form and give one concrete example."
    assert response_problem("Yes.", instruction) == "too short response"
    assert response_problem("Yes.", instruction, min_words=1) is None
    assert response_problem(instruction, instruction) == "response copies the prompt"
    assert response_problem("The Moon's gravity pulls the ocean into two bulges; Bay of Fundy.", instruction) is None
