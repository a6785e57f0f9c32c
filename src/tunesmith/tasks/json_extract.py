"""The quickstart task: turn a natural-language restaurant booking request into one strict JSON object.

Deterministic (random.Random(seed)), offline, and sized for the bundled SmolLM2-135M-Instruct: the base
model gets the format and fields wrong, a LoRA learns it in minutes. Every target field is stated in the
request in one of a few learnable renderings (digits or words for the party size; three date formats;
12-hour "7:30 pm" or 24-hour "19:30" times).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

INSTRUCTION = (
    "Extract the booking as JSON with keys name, party_size, date (YYYY-MM-DD), time (HH:MM, 24h), restaurant."
)
FIELDS = ("name", "party_size", "date", "time", "restaurant")

FIRST_NAMES = (
    "Alice", "Bob", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal",
    "Keiko", "Liam", "Maria", "Nikhil", "Olivia", "Pablo", "Quinn", "Rosa", "Samir", "Tara",
    "Umar", "Vera", "William", "Ximena", "Yusuf", "Zoe", "Aaron", "Bianca", "Chen", "Dmitri",
    "Emma", "Felix", "Gemma", "Hassan", "Isla", "Jonas", "Kira", "Lucas", "Mei", "Noah",
    "Omar", "Priya", "Rafael", "Sofia", "Tomas", "Ursula", "Victor", "Wendy", "Yara", "Zane",
    "Anna", "Ben", "Chloe", "Diego", "Eva", "Frank", "Hannah", "Ivan", "Julia", "Kofi",
)
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Nguyen", "Kowalski", "Okafor", "Rossi", "Tanaka", "Muller", "Silva",
    "Brown", "Patel", "Kim", "Lopez", "Novak", "Haddad", "Jensen", "Dubois", "Costa", "Ivanova",
    "Walker", "Singh", "Moreau", "Schmidt", "Fischer", "Alvarez", "Chen", "Murphy", "Reyes", "Larsen",
    "Bianchi", "Sato", "Wright", "Khan", "Petrov", "Santos", "Meyer", "Hughes", "Romero", "Berg",
    "Adams", "Baker", "Clarke", "Evans", "Foster", "Gray", "Hayes", "Irwin", "Jordan", "Keller",
    "Lambert", "Mason", "Nolan", "Owens", "Pierce", "Quinlan", "Russo", "Stone", "Turner", "Vance",
)
RESTAURANTS = (
    "Luigi's", "The Golden Fork", "Sakura House", "Blue Lagoon", "Casa Verde", "The Olive Tree",
    "Spice Route", "Le Petit Jardin", "Harbor Grill", "Noodle Bar 88", "The Red Lantern", "Bella Napoli",
    "Smoke & Oak", "Green Basil", "Taj Palace", "The Copper Pot", "El Toro", "Ocean Pearl",
    "Maple Diner", "Kyoto Garden", "The Rusty Anchor", "Cafe Lumiere", "Athena Taverna", "Bistro 21",
    "The Hungry Bear", "Seoul Kitchen", "Pho Saigon", "La Paloma", "The Silver Spoon", "Marrakech Nights",
    "Trattoria Roma", "The Brass Bell", "Little Lisbon", "Dragon Wok", "Cedar & Salt", "Fjord",
    "The Garden Room", "Mama Rosa's", "Urban Tandoor", "The Night Owl",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# {count}: the party size as a number; {party}: a counted noun phrase ("4 people", "a party of two").
TEMPLATES = (
    "Table for {count} at {restaurant} on {date} at {time}, under {name}.",
    "Hi, this is {name}. Could you book {restaurant} for {party} on {date} at {time}?",
    "Please reserve a table at {restaurant} for {party}, {date}, {time}. Name: {name}.",
    "I'd like a reservation for {party} at {restaurant} on {date} at {time}. It's for {name}.",
    "{name} here - need a table for {count} at {restaurant}, {date} at {time}.",
    "Book {restaurant}: {party}, {date}, {time}, name {name}.",
    "Can we get a table at {restaurant} on {date}? We are {party}, arriving at {time}. Booking name is {name}.",
    "Reservation request from {name}: {restaurant}, {time} on {date}, {party}.",
    "My name is {name} and I want to book dinner for {party} at {restaurant} at {time} on {date}.",
    "Could you put {name} down for {party} at {restaurant}? {date}, {time} please.",
    "Need a booking at {restaurant} for {date} at {time}. Party size {count}. Contact: {name}.",
    "On {date} at {time}, {name} would like a table for {count} at {restaurant}.",
    "Hello! {restaurant}, please, for {party} on {date} at {time}. The reservation is under {name}.",
    "We're {party} hoping to eat at {restaurant} on {date} at {time}. Please book it for {name}.",
    "{restaurant} reservation: {date}, {time}, {party}. Guest name: {name}.",
    "Hey, can you grab us a table for {count} at {restaurant}? {time}, {date}. Put it under {name}, thanks!",
    "Booking for {name}, {party}, at {restaurant} on {date}, {time}.",
    "Please book {party} at {restaurant} for {time} on {date} under the name {name}.",
)
# Requests that leave one field out (the user has not said it): the right answer writes null there rather than
# inventing a value. Not in the quickstart data: the preference demo (configs/dpo_quickstart.yaml) teaches it.
INCOMPLETE_TEMPLATES = {
    "time": (
        "Table for {count} at {restaurant} on {date}, under {name}.",
        "Hi, this is {name}. Could you book {restaurant} for {party} on {date}?",
        "Please reserve a table at {restaurant} for {party}, {date}. Name: {name}.",
        "{name} here - need a table for {count} at {restaurant} on {date}, not sure about the time yet.",
        "Book {restaurant}: {party}, {date}, name {name}.",
        "Reservation request from {name}: {restaurant} on {date}, {party}.",
    ),
    "party_size": (
        "Table at {restaurant} on {date} at {time}, under {name}.",
        "Hi, this is {name}. Could you book {restaurant} on {date} at {time}?",
        "Please reserve a table at {restaurant}, {date}, {time}. Name: {name}.",
        "{name} here - need a table at {restaurant}, {date} at {time}, not sure how many of us yet.",
        "Book {restaurant}: {date}, {time}, name {name}.",
        "Reservation request from {name}: {restaurant}, {time} on {date}.",
    ),
}
PARTY_PHRASES = ("{count} people", "{count} guests", "a party of {count}", "a group of {count}")
_FIRST_DAY = dt.date(2025, 1, 1)
_N_DAYS = (dt.date(2027, 12, 31) - _FIRST_DAY).days + 1


def format_count(n: int, rng: random.Random) -> str:
    """The party size as digits or as an English word (one..twelve)."""
    return NUMBER_WORDS[n] if rng.random() < 0.5 else str(n)


def format_party(n: int, count: str, rng: random.Random) -> str:
    if n == 1:
        return rng.choice((f"{count} person", "just me", "a party of one"))
    return rng.choice(PARTY_PHRASES).format(count=count)


def format_date(day: dt.date, rng: random.Random) -> str:
    """'March 3, 2026', '3 March 2026' or '2026-03-03'."""
    style = rng.randrange(3)
    if style == 0:
        return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"
    if style == 1:
        return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    return day.isoformat()


def format_time(hour: int, minute: int, rng: random.Random) -> str:
    """'7:30 pm' / '7 pm' (12-hour) or '19:30' (24-hour)."""
    if rng.random() < 0.4:
        return f"{hour:02d}:{minute:02d}"
    suffix = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"


def target_json(target: dict) -> str:
    """The assistant answer: compact JSON with keys in FIELDS order."""
    return json.dumps({k: target[k] for k in FIELDS}, separators=(", ", ": "))


def sample_example(rng: random.Random, missing: str | None = None) -> tuple[str, dict]:
    """One (request, target) pair; with `missing` (a key of INCOMPLETE_TEMPLATES) the request leaves that field
    out and the target holds None (null) for it. The random draws are the same either way."""
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    party_size = rng.randint(1, 12)
    day = _FIRST_DAY + dt.timedelta(days=rng.randrange(_N_DAYS))
    hour, minute = rng.randint(11, 22), rng.choice((0, 15, 30, 45))
    restaurant = rng.choice(RESTAURANTS)
    template = rng.choice(INCOMPLETE_TEMPLATES[missing] if missing else TEMPLATES)
    count = format_count(party_size, rng)
    request = template.format(
        name=name, restaurant=restaurant, count=count, party=format_party(party_size, count, rng),
        date=format_date(day, rng), time=format_time(hour, minute, rng),
    )
    target = {"name": name, "party_size": party_size, "date": day.isoformat(),
              "time": f"{hour:02d}:{minute:02d}", "restaurant": restaurant}
    if missing:
        target[missing] = None
    return request, target


def user_message(request: str) -> str:
    return f"{INSTRUCTION}\n\n{request}"


def make_split(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset(), missing: tuple[str, ...] = ()) -> list[dict]:
    """`n` rows with distinct user messages (none in `exclude`), in OpenAI messages format plus "target";
    with `missing`, row i leaves out field missing[i % len(missing)] (incomplete requests, null in the target)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen = set(exclude)
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:  # pragma: no cover - the space holds billions of requests
            raise RuntimeError("could not sample enough distinct requests")
        request, target = sample_example(rng, missing[len(rows) % len(missing)] if missing else None)
        user = user_message(request)
        if user in seen:
            continue
        seen.add(user)
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": target_json(target)}]
        rows.append({"messages": messages, "target": target})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))


def write_quickstart(out_dir: str | Path, n_train: int = 1500, n_eval: int = 100, seed: int = 0) -> dict[str, Path]:
    """Write train.jsonl and eval.jsonl (disjoint user messages, same seed -> same bytes); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eval_rows = make_split(n_eval, seed=2 * seed + 1)
    held_out = {row["messages"][0]["content"] for row in eval_rows}
    train_rows = make_split(n_train, seed=2 * seed, exclude=held_out)
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    write_jsonl(paths["train"], train_rows)
    write_jsonl(paths["eval"], eval_rows)
    return paths
