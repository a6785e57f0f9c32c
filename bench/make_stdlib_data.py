"""Write the benchmark's instruction data: one row per documented public class or function of a fixed
list of standard-library modules ("Explain what the Python function `json.dumps` does." -> its docstring).

Real English with a natural spread of lengths, no download. The row set depends on the Python version
(docstrings change between releases), so the bench records which Python built its data.

    python bench/make_stdlib_data.py OUT.jsonl [--format alpaca|prompt_completion]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
from pathlib import Path

MODULES = (
    "json os re collections itertools functools pathlib random string textwrap statistics datetime heapq "
    "bisect shutil subprocess argparse logging csv math decimal fractions typing dataclasses inspect threading "
    "queue socket urllib.parse email.message zipfile tarfile gzip hashlib hmac base64 difflib pprint unittest "
    "doctest calendar locale gettext sqlite3 xml.etree.ElementTree html http.client asyncio contextlib enum abc "
    "copy pickle shelve tempfile glob fnmatch operator weakref types array struct codecs io time uuid ipaddress "
    "secrets tomllib wave colorsys"
).split()
MIN_DOC_CHARS = 80
MAX_DOC_CHARS = 3000


def _kind(obj) -> str | None:
    if inspect.isclass(obj):
        return "class"
    return "function" if callable(obj) else None


def docstring_rows(seed: int = 0) -> list[dict]:
    """Alpaca rows (instruction, input, output) in a seeded random order."""
    rows = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # e.g. tomllib before 3.11
            continue
        for attr, obj in vars(module).items():
            doc = None if attr.startswith("_") else inspect.getdoc(obj)
            kind = _kind(obj)
            if not doc or len(doc) < MIN_DOC_CHARS or kind is None or getattr(obj, "__module__", name) != name:
                continue
            rows.append({"instruction": f"Explain what the Python {kind} `{name}.{attr}` does.", "input": "",
                         "output": doc[:MAX_DOC_CHARS]})
    random.Random(seed).shuffle(rows)
    return rows


def as_prompt_completion(row: dict) -> dict:
    """The same row as conversational prompt/completion (what TRL's SFTTrainer reads)."""
    return {"prompt": [{"role": "user", "content": row["instruction"]}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", choices=("alpaca", "prompt_completion"), default="alpaca")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = docstring_rows(args.seed)
    if args.format == "prompt_completion":
        rows = [as_prompt_completion(r) for r in rows]
    write(args.out, rows)
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
