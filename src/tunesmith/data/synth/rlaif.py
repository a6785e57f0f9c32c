"""RLAIF preference labels (Lee et al. 2023, arXiv:2309.00267): an AI judge picks the better of two answers.

The judge uses the MT-Bench pairwise prompt (Zheng et al. 2023) and sees each pair in both orders to cancel
position bias. A verdict that survives the swap becomes a pair {prompt, chosen, rejected}; a judge that
disagrees with itself (or calls a tie) gives a tie, counted and either written to OUT.ties.jsonl with
label "tie" or only recorded as rejected. Verdicts the parser cannot read are counted as unparsable.
Rows bring two answers (`responses: [a, b]`, `response_a`/`response_b`, or `chosen`/`rejected` to relabel an
existing set); a row with only a prompt gets two sampled answers from the backend (seeds s and s + 1).
"""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.data.synth.backends import Backend
from tunesmith.data.synth.pipeline import Item, Outcome, SynthReport, complete_map, read_items, run_items, side_path
from tunesmith.data.synth.resumable import ResumableOutput
from tunesmith.data.synth.rouge import tokens

JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question displayed below. You should choose the assistant that follows the user's instructions and answers "
    "the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, "
    "depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two responses and "
    "provide a short explanation. Avoid any position biases and ensure that the order in which the responses were "
    "presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. "
    "Be as objective as possible. After providing your explanation, output your final verdict by strictly following this "
    'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
JUDGE_USER = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)
_BRACKETED = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_WORDED = re.compile(r"(?i)(?:final\s+)?verdict\s*(?:is)?\s*[:\-]?\s*\**\s*\[?\s*(?:assistant\s+)?([ABC])\b")


def judge_conversation(question: str, a: str, b: str) -> list[dict]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_USER.format(question=question, a=a, b=b)}]


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B' or 'C' (tie) from the judge's output: the last [[X]], else 'verdict: X', else a bare letter."""
    if text is None:
        return None
    found = _BRACKETED.findall(text) or _WORDED.findall(text)
    if found:
        return found[-1].upper()
    bare = text.strip().strip(".*[]()").upper()
    return bare if bare in ("A", "B", "C") else None


def combine(first: str, swapped: str) -> int | None:
    """Index of the winner (0 or 1) when both orders agree, else None (a tie).

    `first` judged (r0 as A, r1 as B); `swapped` judged (r1 as A, r0 as B).
    """
    v1 = {"A": 0, "B": 1}.get(first)
    v2 = {"A": 1, "B": 0}.get(swapped)
    return v1 if v1 is not None and v1 == v2 else None


def responses_of(item: Item) -> list[str] | None:
    """The row's two answers, or None when the backend has to write them."""
    row = item.row
    for pair in (row.get("responses"), [row.get("response_a"), row.get("response_b")], [row.get("chosen"), row.get("rejected")]):
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(r, str) and r.strip() for r in pair):
            return [r.strip() for r in pair]
    return None


def _two_answers(backend: Backend, batch: list[Item], temperature: float, max_new_tokens: int, seed: int) -> dict[int, list[str | None]]:
    given = {i: responses_of(it) for i, it in enumerate(batch)}
    need = {i: it.messages for i, it in enumerate(batch) if given[i] is None}
    first = complete_map(backend, need, temperature, max_new_tokens, seed)
    second = complete_map(backend, need, temperature, max_new_tokens, seed + 1)
    return {i: given[i] or [first[i], second[i]] for i in range(len(batch))}


def _step(backend: Backend, keep_ties: bool, temperature: float, max_new_tokens: int, judge_tokens: int, seed: int,
          report: SynthReport):
    def step(batch: list[Item]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        answers = _two_answers(backend, batch, temperature, max_new_tokens, seed)
        for i, (r0, r1) in answers.items():
            if r0 is None or r1 is None:
                outcomes[i] = Outcome(batch[i], failed=True)
            elif tokens(r0) == tokens(r1):
                outcomes[i] = Outcome(batch[i], reject="identical responses")
        live = [i for i in range(len(batch)) if i not in outcomes]
        convs = {}
        for i in live:
            r0, r1 = answers[i]
            convs[2 * i] = judge_conversation(batch[i].prompt, r0, r1)
            convs[2 * i + 1] = judge_conversation(batch[i].prompt, r1, r0)
        raw = complete_map(backend, convs, 0.0, judge_tokens, seed)
        for i in live:
            outcomes[i] = _judged(batch[i], answers[i], raw[2 * i], raw[2 * i + 1], keep_ties, report)
        return [outcomes[i] for i in range(len(batch))]

    return step


def _judged(item: Item, answers: list[str], out1: str | None, out2: str | None, keep_ties: bool, report: SynthReport) -> Outcome:
    if out1 is None or out2 is None:
        return Outcome(item, failed=True)
    v1, v2 = parse_verdict(out1), parse_verdict(out2)
    report.count("unparsable judgements", (v1 is None) + (v2 is None))
    if v1 is None or v2 is None:
        return Outcome(item, reject="unparsable verdict", detail={"judge": [out1[:500], out2[:500]]})
    winner = combine(v1, v2)
    prompt = item.prompt if len(item.messages) == 1 else item.messages
    if winner is not None:
        report.count("consistent verdicts")
        return Outcome(item, rows={"pairs": [{"id": item.id, "prompt": prompt, "chosen": answers[winner],
                                              "rejected": answers[1 - winner], "verdicts": [v1, v2]}]})
    report.count("ties")
    if v1 == v2 and v1 != "C":
        report.count("position-biased ties")  # the judge preferred whichever answer came first (or second)
    if keep_ties:
        return Outcome(item, rows={"ties": [{"id": item.id, "prompt": prompt, "response_a": answers[0],
                                             "response_b": answers[1], "label": "tie", "verdicts": [v1, v2]}]})
    return Outcome(item, reject="tie", detail={"verdicts": [v1, v2]})


def rlaif(inputs: str | Path, out: str | Path, backend: Backend, *, keep_ties: bool = False, temperature: float = 0.8,
          max_new_tokens: int = 256, judge_tokens: int = 256, batch_size: int = 8, limit: int | None = None,
          seed: int = 0, progress: bool = True) -> SynthReport:
    """Label answer pairs with the judge: pairs to `out`, ties to OUT.ties.jsonl (keep_ties) or OUT.rejected.jsonl."""
    out = Path(out)
    report = SynthReport("rlaif", backend=backend.stats)
    items = read_items(inputs, "rlaif", report)
    sinks = {"pairs": out, "ties": side_path(out, "ties"), "rejected": side_path(out, "rejected")}
    report.outputs = {k: str(v) for k, v in sinks.items() if k != "ties" or keep_ties}
    with ResumableOutput(sinks) as output:
        step = _step(backend, keep_ties, temperature, max_new_tokens, judge_tokens, seed, report)
        run_items(items, output, step, report, batch_size=batch_size, limit=limit, label="rlaif", progress=progress)
    return report
