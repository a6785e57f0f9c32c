"""Evol-Instruct (Xu et al. 2023, "WizardLM", arXiv:2304.12244): rewrite instructions into harder or new ones.

In-depth evolving adds constraints, deepens, concretizes or asks for more reasoning steps; in-breadth
evolving creates a new, rarer instruction of the same domain. Prompts follow the paper's appendix. Each item
draws its evolution from a RNG seeded by (seed, item id), so a rerun makes the same choice. Round r evolves
the instructions kept in round r-1. Failed evolutions are eliminated (paper Sec. 3.3), each with its reason
in OUT.rejected.jsonl and counted in the stats:

1. no information gain: the model itself (local or endpoint) is asked the paper's "Equal or Not Equal"
   question about original vs evolved instruction (greedy, `judge=True`); "Equal" eliminates. Cheaper
   checks come first: unchanged or near-copies of the original (ROUGE-L), too short;
2. the answer is a short apology ("sorry", under 80 words), or (3) only punctuation and stop words;
   we also drop answers under `min_response_words` words and answers that copy the instruction;
4. the evolved text copies words of the evolving prompt ("#Rewritten Prompt#", "given prompt").
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from tunesmith.data.synth.backends import Backend
from tunesmith.data.synth.pipeline import (Item, Outcome, SynthReport, read_items, run_items, side_path,
                                           strip_label)
from tunesmith.data.synth.resumable import ResumableOutput, stable_id
from tunesmith.data.synth.rouge import rouge_l, tokens

DEPTH = """I want you act as a Prompt Rewriter.
Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.
But the rewritten prompt must be reasonable and must be understood and responded by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. Also, please do not omit the input in #The Given Prompt#.
You SHOULD complicate the given prompt using the following method:
{method}
You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#.
'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#
#The Given Prompt#:
{instruction}
#Rewritten Prompt#:
"""

BREADTH = """I want you act as a Prompt Creator.
Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.
This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.
The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.
The #Created Prompt# must be reasonable and must be understood and responded by humans.
'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#
#Given Prompt#:
{instruction}
#Created Prompt#:
"""

DEPTH_METHODS = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#'",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
}
EVOLUTIONS = (*DEPTH_METHODS, "breadth")
EQUAL = """Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:
1. They have same constraints and requirments.
2. They have same depth and breadth of the inquiry.
The First Prompt: {first}
The Second Prompt: {second}
Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"""
JUDGE_TOKENS = 16
LEFTOVERS = ("#rewritten prompt#", "#given prompt#", "#the given prompt#", "#created prompt#", "given prompt",
             "rewritten prompt", "created prompt")
LABELS = ("#Rewritten Prompt#:", "#Rewritten Prompt#", "#Created Prompt#:", "#Created Prompt#", "Rewritten Prompt:", "Created Prompt:")
STOPWORDS = frozenset("a an the of to and or in on at is are be it this that for with as by".split())


def evolution_prompt(kind: str, instruction: str) -> str:
    """The paper's rewriting prompt for one evolution kind."""
    if kind == "breadth":
        return BREADTH.format(instruction=instruction)
    return DEPTH.format(method=DEPTH_METHODS[kind], instruction=instruction)


def choose_evolution(item_id: str, seed: int, kinds: tuple[str, ...] = EVOLUTIONS) -> str:
    return random.Random(f"{seed}:{item_id}").choice(kinds)


def evolution_problem(original: str, evolved: str, kind: str, copy_threshold: float = 0.95,
                      min_words: int = 3) -> str | None:
    """Why an evolved instruction is eliminated, or None when it is kept."""
    if not evolved.strip():
        return "empty"
    low = evolved.lower()
    if any(marker in low for marker in LEFTOVERS):
        return "template leftovers"
    if " ".join(tokens(evolved)) == " ".join(tokens(original)) or rouge_l(original, evolved) >= copy_threshold:
        return "unchanged"
    n_new, n_old = len(tokens(evolved)), len(tokens(original))
    if n_new < min_words or (kind != "breadth" and n_new < n_old // 2):
        return "too short"
    return None


def response_problem(response: str, instruction: str = "", min_words: int = 3) -> str | None:
    """Paper's rules 2-3 (a short apology; only punctuation and stop words), then too short, or a copy of
    the instruction."""
    words = tokens(response)
    if not [w for w in words if w not in STOPWORDS]:
        return "empty response"
    if "sorry" in words and len(words) < 80:
        return "refusal response"
    if len(words) < min_words:
        return "too short response"
    if instruction and (words == tokens(instruction) or rouge_l(instruction, response) >= 0.9):
        return "response copies the prompt"
    return None


def equality_prompt(original: str, evolved: str) -> str:
    """The paper's elimination prompt: does the evolved instruction gain anything over the original?"""
    return EQUAL.format(first=original, second=evolved)


def parse_equality(text: str | None) -> bool | None:
    """True for "Equal" (no information gain), False for "Not Equal", None when the reply says neither."""
    low = " ".join(tokens(text or ""))
    if re.search(r"\b(?:not equal|unequal|not the same)\b", low):
        return False
    if re.search(r"\bequal\b", low):
        return True
    return None


def _round_items(output: ResumableOutput, round_no: int) -> list[Item]:
    """Round r > 1 evolves the rows kept in round r - 1 (from this run or an earlier one)."""
    items = []
    for row in output.rows["rows"]:
        if row.get("round") == round_no - 1:
            messages = [{"role": "user", "content": row["instruction"]}]
            items.append(Item(stable_id(f"evol{round_no}", [row["id"]]), messages, row=row))
    return items


def _judge(backend: Backend, candidates: list[tuple[int, Item, str, str]], seed: int, report: SynthReport,
           outcomes: dict[int, Outcome]) -> list[tuple[int, Item, str, str]]:
    """Rule 1: ask the model whether each evolution is Equal to its original; keep the Not Equal ones
    (and, counted, the ones whose reply says neither); a failed request fails the item (retried later)."""
    prompts = [[{"role": "user", "content": equality_prompt(it.prompt, text)}] for _, it, _, text in candidates]
    replies = backend.complete(prompts, 0.0, JUDGE_TOKENS, seed) if candidates else []
    kept = []
    for (i, it, kind, text), reply in zip(candidates, replies):
        verdict = parse_equality(reply)
        if reply is None:
            outcomes[i] = Outcome(it, failed=True)
        elif verdict is True:
            outcomes[i] = Outcome(it, reject="no information gain", detail={"evolution": kind, "evolved": text, "judge": reply.strip()})
        else:
            if verdict is None:
                report.count("unparsable equality judgements")
            kept.append((i, it, kind, text))
    return kept


def _step(backend: Backend, round_no: int, seed: int, respond: bool, judge: bool, temperature: float,
          max_new_tokens: int, kinds: tuple[str, ...], report: SynthReport, min_response_words: int = 3):
    def step(batch: list[Item]) -> list[Outcome]:
        chosen = [choose_evolution(it.id, seed, kinds) for it in batch]
        prompts = [[{"role": "user", "content": evolution_prompt(k, it.prompt)}] for k, it in zip(chosen, batch)]
        evolved = backend.complete(prompts, temperature, max_new_tokens, seed)
        outcomes: dict[int, Outcome] = {}
        survivors = []
        for i, (it, kind, text) in enumerate(zip(batch, chosen, evolved)):
            if text is None:
                outcomes[i] = Outcome(it, failed=True)
                continue
            text = strip_label(text, LABELS)
            problem = evolution_problem(it.prompt, text, kind)
            report.count(f"evolution {kind}")
            if problem:
                outcomes[i] = Outcome(it, reject=problem, detail={"evolution": kind, "evolved": text})
            else:
                survivors.append((i, it, kind, text))
        if judge:
            survivors = _judge(backend, survivors, seed, report, outcomes)
        answers = backend.complete([[{"role": "user", "content": s[3]}] for s in survivors], temperature,
                                   max_new_tokens, seed) if respond and survivors else [None] * len(survivors)
        for (i, it, kind, text), answer in zip(survivors, answers):
            row = {"id": it.id, "instruction": text, "evolution": kind, "round": round_no,
                   "parent": it.row.get("id", it.id), "original": it.prompt}
            problem = response_problem(answer, text, min_response_words) if respond and answer is not None else None
            if respond and answer is None:
                outcomes[i] = Outcome(it, failed=True)
            elif problem:
                outcomes[i] = Outcome(it, reject=problem, detail={"evolution": kind, "evolved": text, "response": answer})
            else:
                outcomes[i] = Outcome(it, rows={"rows": [row | ({"output": answer.strip()} if respond else {})]})
        return [outcomes[i] for i in range(len(batch))]

    return step


def evol_instruct(inputs: str | Path, out: str | Path, backend: Backend, *, rounds: int = 1, respond: bool = True,
                  judge: bool = True, kinds: tuple[str, ...] = EVOLUTIONS, temperature: float = 0.7,
                  max_new_tokens: int = 256, min_response_words: int = 3, batch_size: int = 8,
                  limit: int | None = None, seed: int = 0, progress: bool = True) -> SynthReport:
    """Evolve every instruction of `inputs` for `rounds` rounds; rows go to `out`, eliminations to OUT.rejected.jsonl.
    `judge` asks the model the paper's Equal / Not Equal question (one greedy request per surviving evolution)."""
    unknown = [k for k in kinds if k not in EVOLUTIONS]
    if unknown:
        from tunesmith.errors import TunesmithError

        raise TunesmithError(f"unknown evolution {unknown[0]!r}; choose from {', '.join(EVOLUTIONS)}")
    out = Path(out)
    report = SynthReport("evol-instruct", backend=backend.stats)
    items = read_items(inputs, "evol1", report)
    sinks = {"rows": out, "rejected": side_path(out, "rejected")}
    report.outputs = {k: str(v) for k, v in sinks.items()}
    with ResumableOutput(sinks) as output:
        for round_no in range(1, rounds + 1):
            batch_items = items if round_no == 1 else _round_items(output, round_no)
            left = None if limit is None else limit - report.processed
            if left is not None and left <= 0:
                break
            step = _step(backend, round_no, seed, respond, judge, temperature, max_new_tokens, tuple(kinds), report,
                         min_response_words)
            run_items(batch_items, output, step, report, batch_size=batch_size, limit=left,
                      label=f"evol-instruct round {round_no}", progress=progress)
    return report
