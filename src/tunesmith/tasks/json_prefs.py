"""Preference pairs for the quickstart JSON-extraction task: the exact answer versus a typical small-model failure.

Deterministic (random.Random(seed)) and offline, like tasks/json_extract.py. Each row pairs one booking request
with chosen = the exact compact JSON answer (`target_json`) and rejected = one realistic failure of a small chat
model, named in `rejected_kind` so results can be broken down by failure:

- preamble: chatter before the JSON ("Here is the JSON:");        - continuation: chatter or a new turn after it;
- fence: the JSON inside a markdown ```json fence;                  - time_12h: "time": "8 pm" instead of "20:00";
- date_format: the date as written ("March 3, 2026");               - swapped_fields: name and restaurant swapped;
- party_size_string: "party_size": "4" / "four";                    - missing_key: one of the five keys left out;
- truncated: the JSON cut off part-way (as when generation stops at max_new_tokens);
- opt-in value errors in the right format: time_shift ("18:00" for 8 pm), date_shift (a day or month slip).

Kinds rotate row by row (every kind appears once in any len(kinds) consecutive rows; default: the nine above). Held-out eval requests are disjoint
from the train requests and from the quickstart eval set (`write_quickstart` with the same seed), so DPO trained
on these pairs can be scored by generation on data/.../quickstart/eval.jsonl without leakage.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError
from tunesmith.tasks.json_extract import FIELDS, MONTHS, NUMBER_WORDS, make_split, target_json, write_jsonl

PREAMBLES = (
    "Here is the JSON:\n", "Sure! Here is the booking as JSON:\n\n", "Here's the extracted booking:\n",
    "Certainly. The JSON object is:\n", "Of course! ", "Here is the requested JSON output:\n\n",
)
TRAILERS = (
    "\n\nThis JSON contains the name, party size, date, time and restaurant from the request.",
    "\n\nLet me know if you need anything else!",
    "\n\nNote: the time has been converted to 24-hour format.",
    "\nI hope this helps with your reservation.",
    "\n\nExplanation: I extracted each field from the message above.",
    "\n\nuser\nCan you also book a taxi?",
)


def _dump(obj: dict) -> str:
    return json.dumps(obj, separators=(", ", ": "))


def _time_12h(target: dict, rng: random.Random) -> dict:
    hour, minute = map(int, target["time"].split(":"))
    suffix = rng.choice(("am", "pm", "AM", "PM")) if rng.random() < 0.1 else ("am" if hour < 12 else "pm")
    h12 = hour % 12 or 12
    return {**target, "time": f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"}


def _date_format(target: dict, rng: random.Random) -> dict:
    day = dt.date.fromisoformat(target["date"])
    text = f"{MONTHS[day.month - 1]} {day.day}, {day.year}" if rng.random() < 0.5 else f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    return {**target, "date": text}


def _party_string(target: dict, rng: random.Random) -> dict:
    n = target["party_size"]
    return {**target, "party_size": NUMBER_WORDS[n] if rng.random() < 0.5 else str(n)}


def _missing_key(target: dict, rng: random.Random) -> dict:
    drop = rng.choice(FIELDS)
    return {k: v for k, v in target.items() if k != drop}


def _time_shift(target: dict, rng: random.Random) -> dict:
    """A wrong 24-hour time: the 12-hour conversion botched (20:00 -> 18:00) or the hour off by one; the other side of
    noon (20:00 -> 08:00) is its own kind, ampm_flip."""
    hour, minute = map(int, target["time"].split(":"))
    wrong = rng.choice([h for h in (hour - 2, hour + 2, hour - 1, hour + 1) if 0 <= h < 24])
    return {**target, "time": f"{wrong:02d}:{minute:02d}"}


def _flip_ampm(time: str) -> str:
    """The 24-hour time on the wrong side of noon (20:00 -> 08:00, 11:00 -> 23:00): the same error for am and pm
    requests, so a preference for the right hour cannot be learnt as "later is better"."""
    hour, minute = map(int, time.split(":"))
    return f"{(hour + 12) % 24:02d}:{minute:02d}"


def _date_shift(target: dict, rng: random.Random) -> dict:
    """A wrong ISO date: a day or month slip of the kind small models make when copying dates."""
    day = dt.date.fromisoformat(target["date"])
    wrong = day + dt.timedelta(days=rng.choice((-2, -1, 1, 2, 7)))
    if rng.random() < 0.3 and day.day <= 12 and day.day != day.month:
        wrong = day.replace(month=day.day, day=min(day.month, 28))  # day and month swapped
    return {**target, "date": wrong.isoformat()}


def _truncated(target: dict, rng: random.Random) -> str:
    text = target_json(target)
    return text[: rng.randint(len(text) // 3, len(text) - 2)]


# kind -> (target, rng) -> rejected answer text
REJECTED_KINDS: dict[str, Callable[[dict, random.Random], str]] = {
    "preamble": lambda t, rng: rng.choice(PREAMBLES) + target_json(t),
    "continuation": lambda t, rng: target_json(t) + rng.choice(TRAILERS),
    "fence": lambda t, rng: "```json\n" + target_json(t) + "\n```",
    "time_12h": lambda t, rng: _dump(_time_12h(t, rng)),
    "date_format": lambda t, rng: _dump(_date_format(t, rng)),
    "swapped_fields": lambda t, rng: _dump({**t, "name": t["restaurant"], "restaurant": t["name"]}),
    "party_size_string": lambda t, rng: _dump(_party_string(t, rng)),
    "missing_key": lambda t, rng: _dump(_missing_key(t, rng)),
    "truncated": _truncated,
    "time_shift": lambda t, rng: _dump(_time_shift(t, rng)),
    "ampm_flip": lambda t, rng: _dump({**t, "time": _flip_ampm(t["time"])}),
    "date_shift": lambda t, rng: _dump(_date_shift(t, rng)),
}
# the default rotation (the reward-model demo's data); time_shift / ampm_flip / date_shift (wrong values in the right format,
# what a briefly trained adapter gets wrong) are opt-in via `kinds`
DEFAULT_KINDS = tuple(k for k in REJECTED_KINDS if k not in ("time_shift", "ampm_flip", "date_shift"))


def check_kinds(kinds: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [k for k in kinds if k not in REJECTED_KINDS]
    if unknown or not kinds:
        raise TunesmithError(f"rejected kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(REJECTED_KINDS)}")
    return tuple(kinds)


def preference_rows(rows: list[dict], seed: int, kinds: tuple[str, ...] = DEFAULT_KINDS) -> list[dict]:
    """{prompt, chosen, rejected, rejected_kind, target} for each quickstart row (messages + target)."""
    rng = random.Random(seed)
    kinds = list(check_kinds(kinds))
    out = []
    for i, row in enumerate(rows):
        kind = kinds[i % len(kinds)]
        target = row["target"]
        out.append({
            "prompt": row["messages"][0]["content"],
            "chosen": target_json(target),
            "rejected": REJECTED_KINDS[kind](target, rng),
            "rejected_kind": kind,
            "target": target,
        })
    return out


def pref_request_splits(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval) quickstart rows for preference data; eval requests are disjoint from train and from the
    quickstart eval set (`write_quickstart` with the same seed)."""
    quickstart_eval = {r["messages"][0]["content"] for r in make_split(100, seed=2 * seed + 1)}
    eval_split = make_split(n_eval, seed=10_000 + 2 * seed + 1, exclude=quickstart_eval)
    held_out = quickstart_eval | {r["messages"][0]["content"] for r in eval_split}
    return make_split(n_train, seed=10_000 + 2 * seed, exclude=held_out), eval_split


def incomplete_request_splits(n_train: int, n_eval: int, seed: int = 0, missing: tuple[str, ...] = ("time", "party_size")) -> tuple[list[dict], list[dict]]:
    """(train, eval) requests that leave a field out (null in the target), disjoint from each other and from
    the quickstart eval set; eval requests serve both the held-out pairs and the behaviour check."""
    quickstart_eval = {r["messages"][0]["content"] for r in make_split(100, seed=2 * seed + 1)}
    eval_split = make_split(n_eval, seed=30_000 + 2 * seed + 1, exclude=quickstart_eval, missing=missing)
    held_out = quickstart_eval | {r["messages"][0]["content"] for r in eval_split}
    return make_split(n_train, seed=30_000 + 2 * seed, exclude=held_out, missing=missing), eval_split


def make_pref_splits(n_train: int, n_eval: int, seed: int = 0, kinds: tuple[str, ...] = DEFAULT_KINDS) -> tuple[list[dict], list[dict]]:
    """(train, eval) preference rows with synthetic rejected answers (see `pref_request_splits`)."""
    train_split, eval_split = pref_request_splits(n_train, n_eval, seed)
    return (preference_rows(train_split, seed=20_000 + 2 * seed, kinds=kinds),
            preference_rows(eval_split, seed=20_000 + 2 * seed + 1, kinds=kinds))


def kind_counts(rows: list[dict]) -> dict[str, int]:
    return dict(Counter(r["rejected_kind"] for r in rows))


def write_quickstart_prefs(out_dir: str | Path, n_train: int = 450, n_eval: int = 180, seed: int = 0,
                           kinds: tuple[str, ...] = DEFAULT_KINDS) -> dict[str, Path]:
    """Write train.jsonl and eval.jsonl of preference pairs (same seed -> same bytes); return their paths."""
    kinds = check_kinds(kinds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, evals = make_pref_splits(n_train, n_eval, seed, kinds)
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    for name, rows in (("train", train), ("eval", evals)):
        write_jsonl(paths[name], rows)
    return paths


# ---------------------------------------------------------------- the same kinds, found in model outputs

VERBOSE_KINDS = ("preamble", "continuation", "fence")


def _value_kind(parsed: dict, target: dict) -> str:
    """The first REJECTED_KINDS-style field error in a parsed (non-exact) answer."""
    if set(parsed) < set(FIELDS):
        return "missing_key"
    checks = (
        ("invented_value", any(target[k] is None and parsed.get(k) is not None for k in FIELDS)),
        ("dropped_value", any(target[k] is not None and parsed.get(k) is None for k in FIELDS)),
        ("swapped_fields", parsed.get("name") == target["restaurant"]),
        ("time_12h", isinstance(parsed.get("time"), str) and parsed["time"].strip().lower().endswith(("am", "pm"))),
        ("date_format", isinstance(parsed.get("date"), str) and parsed["date"] != target["date"] and any(m in parsed["date"] for m in MONTHS)),
        ("party_size_string", isinstance(parsed.get("party_size"), str)),
        ("ampm_flip", target["time"] is not None and parsed.get("time") == _flip_ampm(target["time"])),
        ("time_shift", parsed.get("time") != target["time"]),
        ("date_shift", parsed.get("date") != target["date"]),
    )
    return next((kind for kind, hit in checks if hit), "wrong_value")


def classify_output(output: str, target: dict) -> str:
    """'exact' (the compact answer, nothing else), a REJECTED_KINDS name, 'exact_other_spacing', 'wrong_value'
    (parses, a field is wrong in another way) or 'no_json'."""
    from tunesmith.tasks.scoring import first_json_object, parse_json_object, same_value

    text = output.strip()
    if text == target_json(target):
        return "exact"
    parsed = parse_json_object(text)
    if parsed is None:
        found = first_json_object(text)
        if found is not None:
            return "preamble" if not text.startswith("{") else "continuation"
        return "truncated" if "{" in text else "no_json"
    if set(parsed) == set(FIELDS) and all(same_value(parsed[k], target[k]) for k in FIELDS):
        return "fence" if text.startswith("```") else "exact_other_spacing"
    return _value_kind(parsed, target)


def behaviour_report(outputs: list[str], targets: list[dict]) -> dict:
    """Share of outputs per kind, and the verbose rate (any text around the JSON: preamble, continuation, fence)."""
    return behaviour_from_kinds([classify_output(o, t) for o, t in zip(outputs, targets)])


def behaviour_from_kinds(answer_kinds: list[str]) -> dict:
    """behaviour_report from answers already classified with `classify_output`."""
    kinds = Counter(answer_kinds)
    n = max(len(answer_kinds), 1)
    return {"n": len(answer_kinds), "kinds": dict(sorted(kinds.items())),
            "verbose_rate": sum(kinds[k] for k in VERBOSE_KINDS) / n, "exact_compact_rate": kinds["exact"] / n}
