"""The bundled instruction-following prompt set: tasks x verifiable instructions, generated deterministically.

`make_prompts(n, seed)` always returns the same rows for the same arguments: {"id", "prompt",
"instructions": [{"kind", **kwargs}], "category"}. Instructions that contradict each other (lowercase with
uppercase, JSON with bullets, ...) never share a prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

TASKS = [
    "Write a short note about {t}.", "Explain {t} to a ten-year-old.", "Give advice about {t}.",
    "Describe {t} in a few sentences.", "Write a short story involving {t}.", "Summarise what people should know about {t}.",
    "Write a product description for something related to {t}.", "Write an email to a friend about {t}.",
]
TOPICS = [
    "the ocean", "learning to cook", "a rainy day", "public libraries", "bicycles", "the moon", "gardening",
    "a job interview", "saving money", "coffee", "mountains", "a birthday party", "trains", "recycling",
    "chess", "the first day of school", "sleep", "volcanoes", "music practice", "a city park",
]
KEYWORDS = ["blue", "friend", "quiet", "window", "bread", "river", "lamp", "garden", "market", "morning"]
PHRASES = ["Is there anything else I can help with?", "Thank you for reading.", "That is all."]
OPENERS = ["My answer is", "Here is", "Dear reader"]
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish", "en": "English"}

Maker = Callable[[random.Random], tuple[str, dict]]


def _rel(rng: random.Random) -> str:
    return rng.choice(["at least", "less than"])


INSTRUCTIONS: dict[str, Maker] = {
    "json_format": lambda r: ("Wrap your entire output in JSON format.", {}),
    "word_count": lambda r: (lambda rel, n: (f"Answer with {rel} {n} words.", {"relation": rel, "n": n}))(_rel(r), r.choice([40, 80, 120])),
    "sentence_count": lambda r: (lambda rel, n: (f"Your response should contain {rel} {n} sentences.", {"relation": rel, "n": n}))(_rel(r), r.choice([3, 5, 8])),
    "paragraph_count": lambda r: (lambda n: (f"There should be exactly {n} paragraphs, separated by blank lines.", {"n": n}))(r.choice([2, 3, 4])),
    "bullet_count": lambda r: (lambda n: (f"Your answer must contain exactly {n} bullet points, using markdown bullets such as:\n* This is a point.", {"n": n}))(r.choice([2, 3, 4, 5])),
    "include_keywords": lambda r: (lambda ks: (f"Include the keywords {', '.join(ks)} in the response.", {"keywords": ks}))(r.sample(KEYWORDS, 2)),
    "forbidden_words": lambda r: (lambda ws: (f"Do not include the words {', '.join(ws)} in the response.", {"forbidden": ws}))(r.sample(["very", "really", "good", "nice", "thing"], 2)),
    "keyword_frequency": lambda r: (lambda k, n: (f"The word '{k}' should appear at least {n} times.", {"keyword": k, "relation": "at least", "n": n}))(r.choice(KEYWORDS), r.choice([2, 3])),
    "lowercase": lambda r: ("Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.", {}),
    "uppercase": lambda r: ("Your entire response should be in English and in all capital letters.", {}),
    "starts_with": lambda r: (lambda p: (f"Start your response with the phrase '{p}'.", {"phrase": p}))(r.choice(OPENERS)),
    "ends_with": lambda r: (lambda p: (f"Finish your response with this exact phrase: {p} No other words should follow it.", {"phrase": p}))(r.choice(PHRASES)),
    "numbered_sections": lambda r: (lambda n: (f"Your response must have {n} sections. Mark the beginning of each section with SECTION X, such as: SECTION 1.", {"n": n, "section_word": "SECTION"}))(r.choice([2, 3])),
    "placeholders": lambda r: (lambda n: (f"The response must contain at least {n} placeholders in square brackets, such as [address].", {"n": n}))(r.choice([1, 2, 3])),
    "title": lambda r: ("Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.", {}),
    "quotation": lambda r: ("Wrap your entire response with double quotation marks.", {}),
    "no_commas": lambda r: ("In your entire response, refrain from the use of any commas.", {}),
    "postscript": lambda r: ("At the end of your response, please explicitly add a postscript starting with P.S.", {"marker": "P.S."}),
    "highlighted_sections": lambda r: (lambda n: (f"Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*.", {"n": n}))(r.choice([1, 2, 3])),
    "letter_frequency": lambda r: (lambda l, n: (f"In your response, the letter {l} should appear at least {n} times.", {"letter": l, "relation": "at least", "n": n}))(r.choice("aeinorst"), r.choice([5, 10, 15])),
    "capital_word_frequency": lambda r: (lambda rel, n: (f"In your response, words with all capital letters should appear {rel} {n} times.", {"relation": rel, "n": n}))(_rel(r), r.choice([2, 4])),
    "two_responses": lambda r: ("Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******.", {"separator": "******"}),
    "constrained_response": lambda r: ("Answer with one of the following options: My answer is yes., My answer is no., My answer is maybe.", {"options": ["My answer is yes.", "My answer is no.", "My answer is maybe."]}),
    "end_with_question": lambda r: ("End your response with a question.", {}),
    "response_language": lambda r: (lambda code: (f"Your ENTIRE response should be in {LANGUAGES[code]} language, no other language is allowed.", {"language": code}))(r.choice(["fr", "de", "es"])),
}

# Instructions that cannot be satisfied together (or make each other trivial).
CONFLICTS = [
    {"json_format", "bullet_count", "paragraph_count", "numbered_sections", "two_responses", "quotation", "title",
     "postscript", "starts_with", "ends_with", "constrained_response", "end_with_question", "highlighted_sections"},
    {"lowercase", "uppercase", "capital_word_frequency", "response_language"},
    {"starts_with", "repeat_prompt", "quotation"},
    {"ends_with", "postscript", "end_with_question", "quotation", "constrained_response"},
]


def _compatible(kind: str, chosen: list[str]) -> bool:
    return kind not in chosen and not any(kind in group and any(c in group for c in chosen) for group in CONFLICTS)


def make_prompts(n: int = 60, seed: int = 0, max_instructions: int = 2) -> list[dict]:
    """`n` prompts, each a task plus 1..max_instructions compatible verifiable instructions; every kind appears."""
    rng = random.Random(seed)
    kinds = sorted(INSTRUCTIONS)
    rows = []
    for i in range(n):
        task = rng.choice(TASKS).format(t=rng.choice(TOPICS))
        first = kinds[i % len(kinds)]  # cycle so every kind is covered in the first len(kinds) prompts
        chosen = [first]
        for _ in range(rng.randint(0, max_instructions - 1)):
            options = [k for k in kinds if _compatible(k, chosen)]
            if options:
                chosen.append(rng.choice(options))
        texts, instructions = [], []
        for kind in chosen:
            text, kwargs = INSTRUCTIONS[kind](rng)
            texts.append(text)
            instructions.append({"kind": kind, **kwargs})
        rows.append({"id": f"ifeval-{i:03d}", "prompt": task + " " + " ".join(texts),
                     "instructions": instructions, "category": first})
    return rows


def write_prompts(path: str | Path, n: int = 60, seed: int = 0) -> Path:
    """Write the bundled set as JSONL (same bytes for the same n and seed)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in make_prompts(n, seed)), encoding="utf-8")
    return out
