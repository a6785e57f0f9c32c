"""The suite table: kind -> (prepare: read and validate items before any model loads, run: score one model).

Every run returns {"metrics": {name: value}, "directions": {name: higher_is_better}, "items": [{"id",
"category", "scores": {metric: value}, "output"?, "reference"?}]}; per-item scores feed the A/B statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tunesmith.errors import DataError, SkipReport, TunesmithError
from tunesmith.evaluation.config import SUITE_KINDS, GenerationSettings, SuiteSpec


@dataclass
class Suite:
    prepare: Callable[[SuiteSpec], Any]
    run: Callable[..., dict]  # (model, tokenizer, prepared, spec, settings, template) -> result
    generative: bool


def _need_data(spec: SuiteSpec) -> str:
    if not spec.data:
        raise TunesmithError(f"suite '{spec.name}' ({spec.kind}) needs a data file: set `data:` (or --data)")
    return spec.data


# ---------------------------------------------------------------- likelihood


def _prep_likelihood(spec: SuiteSpec) -> str:
    """The file to score; without `data`, the bundled general-knowledge chat set (a forgetting probe)."""
    from tunesmith.evaluation.general_probe import general_chat_file
    from tunesmith.evaluation.likelihood import check_text_file

    path = spec.data or str(general_chat_file())
    check_text_file(path)
    return path


def _run_likelihood(model, tokenizer, path, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.likelihood import run_likelihood

    return run_likelihood(model, tokenizer, path, template=template, max_length=spec.max_length, limit=spec.limit,
                          batch_size=spec.batch_size)


def _prep_mc(spec: SuiteSpec) -> list[dict]:
    from tunesmith.evaluation.likelihood import load_choice_items

    return load_choice_items(_need_data(spec), spec.limit)


def _run_mc(model, tokenizer, items, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.likelihood import run_multiple_choice

    return run_multiple_choice(model, tokenizer, items, spec.max_length, spec.batch_size)


# ---------------------------------------------------------------- generation


def _prep_generation(spec: SuiteSpec) -> list[dict]:
    from tunesmith.evaluation.generation import load_generation_items

    return load_generation_items(_need_data(spec), spec.limit)


def _run_generation(model, tokenizer, items, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.generation import run_generation

    return run_generation(model, tokenizer, items, settings, spec.regex)


# ---------------------------------------------------------------- instruction following


def _prep_ifeval(spec: SuiteSpec) -> list[dict]:
    from tunesmith.data.readers import read_rows
    from tunesmith.evaluation.ifeval import CHECKS
    from tunesmith.evaluation.ifeval_prompts import make_prompts

    if not spec.data:
        rows = make_prompts()
        return rows[: spec.limit] if spec.limit else rows
    rows = []
    for line, row in read_rows(spec.data, SkipReport(), on_error="stop"):
        insts = row.get("instructions")
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError(spec.data, line, "prompt", "must be a non-empty string")
        if not isinstance(insts, list) or not insts or not all(isinstance(i, dict) for i in insts):
            raise DataError(spec.data, line, "instructions", "must be a non-empty list of {kind, ...} objects")
        for k, inst in enumerate(insts):
            if inst.get("kind") not in CHECKS:
                raise DataError(spec.data, line, f"instructions[{k}].kind", f"unknown kind {inst.get('kind')!r}; known: {', '.join(sorted(CHECKS))}")
        rows.append({"id": str(row.get("id", f"{spec.data}:{line}")), "prompt": row["prompt"], "instructions": insts,
                     "category": str(row.get("category", insts[0]["kind"]))})
        if spec.limit and len(rows) >= spec.limit:
            break
    return rows


def _run_ifeval(model, tokenizer, rows, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.generation import generate_texts
    from tunesmith.evaluation.ifeval import aggregate, score_response

    outputs, seconds = generate_texts(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows], settings)
    scored = [score_response(o, r["instructions"]) for o, r in zip(outputs, rows)]
    metrics = aggregate(scored, [r["instructions"] for r in rows])
    per_kind = metrics.pop("per_kind_strict")
    keys = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
    items = [{"id": r["id"], "category": r["category"], "output": o, "reference": [i["kind"] for i in r["instructions"]],
              "scores": {k: s[k] for k in keys}} for r, o, s in zip(rows, outputs, scored)]
    return {"metrics": metrics, "directions": {k: True for k in keys}, "items": items,
            "breakdown": {"per_kind_strict": per_kind}, "generation_seconds": round(seconds, 3)}


# ---------------------------------------------------------------- the quickstart task


def _prep_quickstart(spec: SuiteSpec) -> tuple[list, list]:
    from tunesmith.cli.task import load_eval_rows

    conversations, targets = load_eval_rows(_need_data(spec))
    if spec.limit:
        conversations, targets = conversations[: spec.limit], targets[: spec.limit]
    return conversations, targets


def _run_quickstart(model, tokenizer, prepared, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.generation import generate_texts
    from tunesmith.tasks.scoring import score_json_extraction

    conversations, targets = prepared
    outputs, seconds = generate_texts(model, tokenizer, conversations, settings)
    summary = score_json_extraction(outputs, targets)
    items = []
    for i, (o, t) in enumerate(zip(outputs, targets)):
        one = score_json_extraction([o], [t])
        fields = one["field_accuracy"]
        items.append({"id": f"{spec.data}:{i + 1}", "category": f"party_size={t.get('party_size')}" if "party_size" in t else "all",
                      "output": o, "reference": t,
                      "scores": {"exact_match": one["exact_match"], "valid_json_rate": one["valid_json_rate"],
                                 "field_accuracy": sum(fields.values()) / max(1, len(fields))}})
    metrics = {"exact_match": summary["exact_match"], "valid_json_rate": summary["valid_json_rate"],
               "lenient_exact_match": summary["lenient_exact_match"],
               "field_accuracy": sum(summary["field_accuracy"].values()) / max(1, len(summary["field_accuracy"]))}
    return {"metrics": metrics, "directions": {k: True for k in metrics}, "items": items,
            "breakdown": {"field_accuracy": summary["field_accuracy"]}, "generation_seconds": round(seconds, 3)}


# ---------------------------------------------------------------- judge, safety, preference


def _prep_judge(spec: SuiteSpec) -> list[dict]:
    from tunesmith.evaluation.judge import load_judge_items

    return load_judge_items(spec.data, spec.mode, spec.limit)


def _run_judge(model, tokenizer, items, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.judge import run_judge

    return run_judge(model, tokenizer, items, spec, settings)


def _prep_safety(spec: SuiteSpec) -> list[dict]:
    from tunesmith.evaluation.safety import load_safety_items

    return load_safety_items(spec.data, spec.limit)


def _run_safety(model, tokenizer, items, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.safety import run_safety

    return run_safety(model, tokenizer, items, spec, settings)


def _prep_preference(spec: SuiteSpec) -> str:
    from tunesmith.evaluation.preference import check_pairs

    return check_pairs(spec.data, spec.limit)


def _run_preference(model, tokenizer, path, spec: SuiteSpec, settings, template: str) -> dict:
    from tunesmith.evaluation.preference import run_preference

    return run_preference(model, tokenizer, path, spec)


SUITES: dict[str, Suite] = {
    "likelihood": Suite(_prep_likelihood, _run_likelihood, generative=False),
    "multiple_choice": Suite(_prep_mc, _run_mc, generative=False),
    "generation": Suite(_prep_generation, _run_generation, generative=True),
    "ifeval": Suite(_prep_ifeval, _run_ifeval, generative=True),
    "quickstart_json": Suite(_prep_quickstart, _run_quickstart, generative=True),
    "judge": Suite(_prep_judge, _run_judge, generative=True),
    "safety": Suite(_prep_safety, _run_safety, generative=True),
    "preference": Suite(_prep_preference, _run_preference, generative=False),
}
assert set(SUITES) == set(SUITE_KINDS)


def settings_for(spec: SuiteSpec, default: GenerationSettings) -> GenerationSettings | None:
    """The generation settings a suite runs with (None for likelihood suites: they do not generate)."""
    return (spec.generation or default) if SUITES[spec.kind].generative else None
