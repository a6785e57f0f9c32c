"""Self-Instruct (Wang et al. 2023, arXiv:2212.10560): grow a task pool from a few seed tasks.

Each request shows `n_seed` human seed tasks and `n_machine` tasks generated earlier (paper Sec. 2.2: 6 + 2).
"two-step" (the paper's pipeline, default): the model lists new instructions after numbered example
instructions; each instruction that passes the instruction filters is then answered in a second request
(instance generation). "one-step" (Alpaca style): the model writes instruction, input and output at once.
A task joins the pool only if it passes the quality filters (paper Sec. 2.4: instruction length,
unsupported modalities, odd starts, empty output or an output that copies the prompt) and the novelty
filter: ROUGE-L F1 < 0.7 against every instruction already in the pool. Requests have ids si-000000, si-000001, ...;
a rerun reloads the pool from the output and continues after the last request it finds.
"""

from __future__ import annotations

import json
import random
import re
from importlib import resources
from pathlib import Path

from tunesmith.data.readers import read_rows
from tunesmith.data.synth.backends import Backend
from tunesmith.data.synth.pipeline import SynthReport, side_path
from tunesmith.data.synth.resumable import ResumableOutput, SynthProgress, item_of
from tunesmith.data.synth.rouge import NoveltyPool, rouge_l, tokens
from tunesmith.errors import DataError, SkipReport, TunesmithError

HEADER = (
    "You are asked to come up with a new task for training an AI assistant: an instruction, an optional input and "
    "a correct output.\nRequirements:\n"
    "1. The new task must differ from the examples in topic and in the verb it uses.\n"
    "2. The instruction is one or two sentences; it must be answerable with text only (no images, audio or files).\n"
    "3. Write <noinput> as the input when the instruction needs none.\n"
    "4. The output is a correct, complete answer to the instruction and input.\n"
    "Follow exactly the format of the examples.\n"
)
ECHO = "a new task that differs from all of these in topic and wording and can be answered with text only"  # step 1's own words
MODALITIES = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
              "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_TASK = re.compile(r"Instruction:\s*(?P<instruction>.*?)\s*\n\s*Input:\s*(?P<input>.*?)\s*\n\s*Output:\s*(?P<output>.*)", re.S | re.I)
_LISTED = re.compile(r"(?im)^\s*(?:#*\s*task\s*\d+\s*[:.)]|\d+\s*[.)])\s*(?:instruction\s*:\s*)?(.+?)\s*$")
_HEAD = re.compile(r"(?im)^\s*#*\s*Task\s*\d+\s*:?\s*$")


def load_seed_tasks(path: str | Path | None = None) -> list[dict]:
    """Seed tasks {instruction, input, output} from a data file; the bundled 20 when `path` is None."""
    if path is None:
        text = resources.files("tunesmith.data.synth").joinpath("seed_tasks.jsonl").read_text("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    tasks = []
    for line, row in read_rows(path, SkipReport()):
        if not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise DataError(path, line, "instruction", "seed tasks need a non-empty 'instruction' (and 'input', 'output')")
        tasks.append({"instruction": row["instruction"], "input": str(row.get("input") or ""), "output": str(row.get("output") or "")})
    if not tasks:
        raise DataError(path, None, None, "no seed tasks")
    return tasks


def format_task(number: int, task: dict) -> str:
    return f"Task {number}\nInstruction: {task['instruction']}\nInput: {task.get('input') or '<noinput>'}\nOutput: {task['output']}\n"


def build_instruction_prompt(examples: list[dict]) -> str:
    """Two-step, step 1: numbered example instructions, then a request for new ones."""
    shots = "\n".join(f"Task {k + 1}: {t['instruction']}" for k, t in enumerate(examples))
    return (f"Here are some tasks for an AI assistant:\n\n{shots}\n\nWrite task {len(examples) + 1}: a new task that differs "
            "from all of these in topic and wording and can be answered with text only. Reply with the task only.")


def parse_instructions(text: str, max_per_request: int = 4) -> list[str]:
    """New instructions from a step-1 response: 'Task N: ...' / 'N. ...' lines, else the first line."""
    found = [m.strip().strip('"') for m in _LISTED.findall(text)]
    if not found:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        found = [re.sub(r"(?i)^(new\s+)?(task|instruction)\s*:\s*", "", first).strip('"')] if first else []
    return [f for f in found if f][:max_per_request]


def build_prompt(examples: list[dict]) -> str:
    """The generation prompt: requirements, numbered examples, and the header of the next task."""
    shots = "\n".join(format_task(k + 1, t) for k, t in enumerate(examples))
    return f"{HEADER}\n{shots}\nTask {len(examples) + 1}\n"


def parse_tasks(text: str) -> list[dict]:
    """Every 'Instruction: / Input: / Output:' block in the response (blocks split at 'Task N' lines)."""
    tasks = []
    for block in _HEAD.split(text):
        m = _TASK.search(block)
        if not m:
            continue
        task = {k: m.group(k).strip() for k in ("instruction", "input", "output")}
        if task["input"].lower() in ("<noinput>", "<no input>", "none", "n/a", "-"):
            task["input"] = ""
        tasks.append(task)
    return tasks


def quality_problem(task: dict, min_words: int = 3, max_words: int = 150, max_output_words: int = 400) -> str | None:
    """Why a generated task fails the quality filters, or None."""
    return instruction_problem(task["instruction"], min_words, max_words) or output_problem(task, max_output_words)


def instruction_problem(instruction: str, min_words: int = 3, max_words: int = 150) -> str | None:
    n = len(instruction.split())
    if n <= min_words or n > max_words:
        return "instruction length"
    low = f" {' '.join(tokens(instruction))} "
    if any(f" {word} " in low for word in MODALITIES):
        return "unsupported modality"
    if not instruction[0].isalnum():
        return "starts with punctuation"
    if not instruction[0].isascii():
        return "non-English start"
    return None


def output_problem(task: dict, max_output_words: int = 400) -> str | None:
    instruction, output = task["instruction"], task["output"]
    if not output.strip():
        return "empty output"
    if len(output.split()) > max_output_words:
        return "output too long"
    prompt = f"{instruction} {task['input']}"
    if tokens(output) in (tokens(instruction), tokens(task["input"]), tokens(prompt)) or rouge_l(prompt, output) >= 0.9:
        return "copies the prompt"
    return None


def _examples(rid: str, seed: int, seeds: list[dict], machine: list[dict], n_seed: int, n_machine: int) -> list[dict]:
    rng = random.Random(f"{seed}:{rid}")
    shots = rng.sample(seeds, min(n_seed, len(seeds))) + rng.sample(machine, min(n_machine, len(machine)))
    rng.shuffle(shots)
    return shots


def _next_request(output: ResumableOutput) -> int:
    done = [int(i.split("-")[1]) for i in output.done if re.fullmatch(r"si-\d+", i)]
    return max(done, default=-1) + 1


class _Screen:
    """Filters, pool and writes of one run: every candidate task is kept or rejected with a reason."""

    def __init__(self, pool: NoveltyPool, threshold: float, output: ResumableOutput, report: SynthReport):
        self.pool, self.threshold, self.output, self.report = pool, threshold, output, report

    def reject(self, row: dict, reason: str) -> None:
        self.report.reject(reason)
        self.output.write("rejected", row | {"reason": reason})

    def novel(self, instruction: str) -> tuple[bool, float]:
        score = self.pool.most_similar(instruction, stop_at=self.threshold)
        return score < self.threshold, score

    def offer(self, row: dict) -> int:
        """Keep a complete task if it passes every filter (novelty re-checked: the pool may have grown)."""
        problem = quality_problem(row)
        ok, score = self.novel(row["instruction"]) if problem is None else (True, 0.0)
        row = row | {"rouge_l_max": round(score, 4)}
        if problem or not ok:
            self.reject(row, problem or "too similar to pool")
            return 0
        self.pool.add(row["instruction"])
        self.output.write("rows", row)
        self.report.rows["rows"] = self.report.rows.get("rows", 0) + 1
        return 1


def _one_step(rids: list[str], texts: list[str], screen: _Screen, *_) -> dict[str, int]:
    """Alpaca style: each response holds whole tasks."""
    kept = {}
    for rid, text in zip(rids, texts):
        tasks = parse_tasks(text)
        if not tasks:
            screen.reject({"id": rid, "response": text[:1000]}, "unparsable")
        kept[rid] = sum(screen.offer({"id": f"{rid}-{j}", "item": rid, **t}) for j, t in enumerate(tasks))
    return kept


def _two_step(rids: list[str], texts: list[str], screen: _Screen, backend: Backend, temperature: float,
              max_new_tokens: int, seed: int) -> dict[str, int | None]:
    """Paper pipeline: screen the listed instructions, answer the survivors, then screen the whole task."""
    kept: dict[str, int | None] = {rid: 0 for rid in rids}
    todo = []
    for rid, text in zip(rids, texts):
        found = parse_instructions(text)
        if not found:
            screen.reject({"id": rid, "response": text[:1000]}, "unparsable")
        for j, instruction in enumerate(found):
            row = {"id": f"{rid}-{j}", "item": rid, "instruction": instruction, "input": "", "output": ""}
            problem = instruction_problem(instruction) or ("echoes the request" if rouge_l(instruction, ECHO) >= 0.5 else None)
            ok, score = screen.novel(instruction) if problem is None else (True, 0.0)
            if problem or not ok:
                screen.reject(row | {"rouge_l_max": round(score, 4)}, problem or "too similar to pool")
            else:
                todo.append(row)
    answers = backend.complete([[{"role": "user", "content": r["instruction"]}] for r in todo], temperature,
                               max_new_tokens, seed) if todo else []
    for row, answer in zip(todo, answers):
        if answer is None:
            kept[row["item"]] = None  # a failed answer: the request is counted failed, its tasks are not written
        elif kept[row["item"]] is not None:
            kept[row["item"]] += screen.offer(row | {"output": answer.strip()})
    return kept


MODES = {"one-step": (build_prompt, _one_step), "two-step": (build_instruction_prompt, _two_step)}


def self_instruct(out: str | Path, backend: Backend, *, seeds: str | Path | None = None, num: int = 100,
                  mode: str = "two-step", threshold: float = 0.7, n_seed: int = 6, n_machine: int = 2,
                  requests_per_batch: int = 8, max_requests: int | None = None, limit: int | None = None,
                  temperature: float = 0.7, max_new_tokens: int = 256, seed: int = 0, progress: bool = True) -> SynthReport:
    """Generate until `out` holds `num` new tasks (or `max_requests` / `limit` requests were sent this run)."""
    if num < 1 or not 0 < threshold <= 1 or mode not in MODES:
        raise TunesmithError(f"need num >= 1, 0 < threshold <= 1 and mode in {', '.join(MODES)}; got {num}, {threshold}, {mode!r}")
    out = Path(out)
    seed_tasks = load_seed_tasks(seeds)
    report = SynthReport("self-instruct", inputs=len(seed_tasks), backend=backend.stats)
    sinks = {"rows": out, "rejected": side_path(out, "rejected")}
    report.outputs = {k: str(v) for k, v in sinks.items()}
    budget = max_requests if max_requests is not None else 3 * num + requests_per_batch
    budget = min(budget, limit) if limit is not None else budget
    prompt_of, judge = MODES[mode]
    with ResumableOutput(sinks) as output:
        machine = output.rows["rows"]
        pool = NoveltyPool([t["instruction"] for t in seed_tasks] + [r["instruction"] for r in machine])
        screen = _Screen(pool, threshold, output, report)
        report.resumed = len({item_of(r) for r in machine + output.rows["rejected"]})
        k = _next_request(output)
        with SynthProgress("self-instruct", total=num, done=min(len(machine), num), enabled=progress) as bar:
            while len(machine) < num and report.processed < budget:
                rids = [f"si-{k + j:06d}" for j in range(min(requests_per_batch, budget - report.processed))]
                k += len(rids)
                prompts = [[{"role": "user", "content": prompt_of(_examples(r, seed, seed_tasks, machine, n_seed, n_machine))}] for r in rids]
                texts = backend.complete(prompts, temperature, max_new_tokens, seed)
                report.processed += len(rids)
                answered = [(r, t) for r, t in zip(rids, texts) if t is not None]
                before = sum(report.rejected.values())
                kept = judge([r for r, _ in answered], [t for _, t in answered], screen, backend, temperature, max_new_tokens, seed)
                failed = len(rids) - len(answered) + sum(v is None for v in kept.values())
                n_kept = sum(v or 0 for v in kept.values())
                report.failed += failed
                report.kept += n_kept
                bar.advance(kept=n_kept, rejected=sum(report.rejected.values()) - before, failed=failed, steps=n_kept)
    report.count("pool size", len(pool))
    return report
