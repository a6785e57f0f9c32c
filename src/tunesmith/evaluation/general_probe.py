"""A small bundled general-knowledge chat set: the default likelihood probe for forgetting checks.

Hand-written, short, factual question/answer pairs covering everyday knowledge, science, language and
arithmetic: after fine-tuning on a narrow task, the perplexity of these answers shows what was lost.
"""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What do plants need to grow?", "Plants need sunlight, water, air and nutrients from the soil to grow."),
    ("Why is the sky blue?", "Sunlight is scattered by the air, and blue light is scattered more than red light, so the sky looks blue."),
    ("What is 12 times 3?", "12 times 3 is 36."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("Name three primary colours.", "Red, yellow and blue are the traditional primary colours."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("How do you say thank you in Spanish?", "In Spanish, thank you is \"gracias\"."),
    ("What is photosynthesis?", "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and oxygen."),
    ("Give me a synonym for happy.", "A synonym for happy is joyful."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Write a sentence using the word 'bright'.", "The morning sun was bright and warm."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Which animal is known as the king of the jungle?", "The lion is often called the king of the jungle."),
    ("What is the opposite of ancient?", "The opposite of ancient is modern."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What language is spoken in Brazil?", "Portuguese is the main language spoken in Brazil."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Suggest a healthy breakfast.", "Oatmeal with fresh fruit and a glass of water is a healthy breakfast."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("Why do we need sleep?", "Sleep lets the body rest and repair itself, and it helps the brain store memories."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("Convert 2 kilometres to metres.", "2 kilometres is 2000 metres."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("Tell me a fun fact about octopuses.", "An octopus has three hearts and blue blood."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
]


def general_chat_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "category": "general"} for q, a in PAIRS]


def general_chat_file() -> Path:
    """The set as a JSONL file in tunesmith's cache dir (rewritten only when its content changed)."""
    from tunesmith.models.load import cache_dir

    text = "".join(json.dumps(r) + "\n" for r in general_chat_rows())
    path = cache_dir() / "eval" / "general_chat.jsonl"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path
