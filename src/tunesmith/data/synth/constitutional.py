"""Constitutional AI data (Bai et al. 2022, arXiv:2212.08073, Sec. 3.1): answer -> critique -> revision.

For each prompt the model answers (or the row's own answer is used), critiques that answer against one
principle sampled from the constitution (seeded per item, so reruns pick the same one), then rewrites it.
Outputs: SFT rows in the messages format (the prompt turns + the revision) and preference pairs
{prompt, chosen: revision, rejected: original} that `tunesmith` preference training reads as is.
A revision equal to the original still makes an SFT row but no pair (chosen == rejected teaches nothing).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from tunesmith.data.synth.backends import Backend
from tunesmith.data.synth.pipeline import (Item, Outcome, SynthReport, complete_map, read_items, run_items, side_path,
                                           strip_label)
from tunesmith.data.synth.resumable import ResumableOutput
from tunesmith.data.synth.rouge import tokens
from tunesmith.errors import DataError

CRITIQUE_SUFFIX = "\nWrite only the critique."
REVISION_SUFFIX = "\nReply with the rewritten response only, without any preamble."
LABELS = ("Revision:", "Revised response:", "Rewritten response:", "Critique:")


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str


def load_principles(path: str | Path | None = None) -> list[Principle]:
    """Principles from a YAML list of {name, critique, revision}; the bundled set when `path` is None."""
    if path is None:
        text, where = resources.files("tunesmith.data.synth").joinpath("principles.yaml").read_text("utf-8"), "principles.yaml"
    else:
        if not Path(path).exists():
            raise DataError(path, None, None, "principles file not found")
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(where, None, None, f"not valid YAML: {exc}") from None
    if not isinstance(doc, list) or not doc:
        raise DataError(where, None, None, "must be a non-empty YAML list of {name, critique, revision}")
    out = []
    for i, p in enumerate(doc):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) and p[k].strip() for k in ("critique", "revision")):
            raise DataError(where, None, f"[{i}]", "each principle needs non-empty 'critique' and 'revision' strings")
        out.append(Principle(str(p.get("name", f"principle-{i}")), p["critique"].strip(), p["revision"].strip()))
    return out


def choose_principle(principles: list[Principle], item_id: str, seed: int) -> Principle:
    return random.Random(f"{seed}:{item_id}").choice(principles)


def critique_turns(item: Item, answer: str, principle: Principle) -> list[dict]:
    return [*item.messages, {"role": "assistant", "content": answer},
            {"role": "user", "content": principle.critique + CRITIQUE_SUFFIX}]


def revision_turns(item: Item, answer: str, principle: Principle, critique: str) -> list[dict]:
    return [*critique_turns(item, answer, principle), {"role": "assistant", "content": critique},
            {"role": "user", "content": principle.revision + REVISION_SUFFIX}]


def _same(a: str, b: str) -> bool:
    return tokens(a) == tokens(b)


def _rows(item: Item, original: str, critique: str, revision: str, principle: Principle) -> dict[str, list[dict]]:
    sft = {"id": item.id, "messages": [*item.messages, {"role": "assistant", "content": revision}],
           "principle": principle.name, "critique": critique}
    rows = {"rows": [sft]}
    if not _same(original, revision):
        prompt = item.prompt if len(item.messages) == 1 else item.messages
        rows["pairs"] = [{"id": item.id, "prompt": prompt, "chosen": revision, "rejected": original, "principle": principle.name}]
    return rows


def _answers(backend: Backend, batch: list[Item], use_existing: bool, temperature: float, max_new_tokens: int,
             seed: int) -> dict[int, str | None]:
    """The original answers: the row's own when allowed, else the model's."""
    own = {i: it.answer for i, it in enumerate(batch) if use_existing and it.answer}
    fresh = complete_map(backend, {i: it.messages for i, it in enumerate(batch) if i not in own}, temperature, max_new_tokens, seed)
    return own | {i: (t.strip() if t is not None else None) for i, t in fresh.items()}


def _step(backend: Backend, principles: list[Principle], seed: int, use_existing: bool, temperature: float,
          max_new_tokens: int, report: SynthReport):
    def settle(outcomes: dict[int, Outcome], batch: list[Item], texts: dict[int, str | None], empty: str) -> dict[int, str]:
        """Failed or empty texts become outcomes; the rest come back label-stripped."""
        good = {}
        for i, text in texts.items():
            clean = strip_label(text, LABELS) if text is not None else None
            if clean is None:
                outcomes[i] = Outcome(batch[i], failed=True)
            elif not clean:
                outcomes[i] = Outcome(batch[i], reject=empty)
            else:
                good[i] = clean
        return good

    def step(batch: list[Item]) -> list[Outcome]:
        picked = [choose_principle(principles, it.id, seed) for it in batch]
        outcomes: dict[int, Outcome] = {}
        answers = settle(outcomes, batch, _answers(backend, batch, use_existing, temperature, max_new_tokens, seed), "empty answer")
        critiques = settle(outcomes, batch, complete_map(
            backend, {i: critique_turns(batch[i], a, picked[i]) for i, a in answers.items()}, temperature, max_new_tokens, seed), "empty critique")
        revisions = settle(outcomes, batch, complete_map(
            backend, {i: revision_turns(batch[i], answers[i], picked[i], c) for i, c in critiques.items()},
            temperature, max_new_tokens, seed), "empty revision")
        for i, revision in revisions.items():
            outcomes[i] = Outcome(batch[i], rows=_rows(batch[i], answers[i], critiques[i], revision, picked[i]))
            if _same(answers[i], revision):
                report.count("unchanged revisions (no pair)")
        return [outcomes[i] for i in range(len(batch))]

    return step


def constitutional(inputs: str | Path, out: str | Path, backend: Backend, *, principles: list[Principle] | None = None,
                   pairs_out: str | Path | None = None, use_existing: bool = True, temperature: float = 0.7,
                   max_new_tokens: int = 256, batch_size: int = 8, limit: int | None = None, seed: int = 0,
                   progress: bool = True) -> SynthReport:
    """Critique and revise every prompt of `inputs`: SFT rows to `out`, pairs to `pairs_out` (OUT.pairs.jsonl)."""
    out = Path(out)
    principles = principles or load_principles()
    report = SynthReport("constitutional", backend=backend.stats)
    items = read_items(inputs, "cai", report)
    sinks = {"rows": out, "pairs": Path(pairs_out) if pairs_out else side_path(out, "pairs"), "rejected": side_path(out, "rejected")}
    report.outputs = {k: str(v) for k, v in sinks.items()}
    with ResumableOutput(sinks, secondary=("pairs",)) as output:
        step = _step(backend, principles, seed, use_existing, temperature, max_new_tokens, report)
        run_items(items, output, step, report, batch_size=batch_size, limit=limit, label="constitutional", progress=progress)
    return report
