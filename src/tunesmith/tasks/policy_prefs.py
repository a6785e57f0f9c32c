"""On-policy preference pairs for the quickstart task: the model's own wrong answers as `rejected`.

Synthetic failures (tasks/json_prefs.py) are off-policy: DPO can separate them without touching what the model
actually generates. Here a policy (base model + adapter) answers booking requests greedily; every answer the
verifier (`classify_output`) does not accept becomes a pair {chosen: the exact compact JSON, rejected: that
answer}, tagged with the failure kind it shows and `rejected_source: "policy"`. Requests it answers right carry
no preference signal and are counted, not paired. This is the verifier-labelled variant of iterative /
on-policy DPO (Xu et al. 2023, "Some things are more CRINGE than others"; Guo et al. 2024, "Direct language
model alignment from online AI feedback"): pairs come from the distribution the policy samples.

Requests use the same seeds and exclusions as `make_pref_splits`, so held-out requests stay disjoint from
train and from the quickstart eval set; greedy decoding makes the files reproducible for a given model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.tasks.json_extract import target_json, write_jsonl
from tunesmith.tasks.json_prefs import classify_output, incomplete_request_splits, pref_request_splits

RIGHT_KINDS = ("exact", "exact_other_spacing")  # same values as the target: nothing to prefer against


def greedy_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 96,
                   batch_size: int = 32, temperature: float = 0.0, seed: int = 0) -> list[str]:
    """The model's answer to each conversation: greedy, or sampled at `temperature` (seeded); the tokenizer
    carries the training chat template."""
    from tunesmith.data.templates import render_prompt, stop_token_ids
    from tunesmith.serving.engine import generate

    prompts = [render_prompt(c, tokenizer) for c in conversations]
    results = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                       batch_size=batch_size, stop_ids=stop_token_ids(tokenizer), seed=seed)
    return [r.text for r in results]


def preference_row(row: dict, rejected: str, kind: str, source: str) -> dict:
    """One preference row: the request, its exact compact JSON (chosen) and the policy's wrong answer (rejected)."""
    return {"prompt": row["messages"][0]["content"], "chosen": target_json(row["target"]), "rejected": rejected,
            "rejected_kind": kind, "rejected_source": source, "target": row["target"]}


def policy_pairs(answer, rows: list[dict], n_pairs: int, chunk: int = 64, sample=None) -> tuple[list[dict], dict]:
    """Answer `rows` in order, `chunk` at a time, until `n_pairs` wrong answers; each becomes a pair.

    `answer(conversations) -> list[str]` (greedy). With `sample` (same signature, temperature sampling), a
    request answered right greedily gets one sampled answer, and a wrong sample becomes its pair
    (`rejected_source: "policy_sample"`): without them every pair would come from requests the model gets
    wrong, and DPO can learn a shortcut that also breaks the ones it gets right. Returns (pairs, counts):
    requests answered, right answers with no pair, empty answers (nothing to reject), pairs per kind and source.
    """
    pairs: list[dict] = []
    counts: Counter = Counter()

    def add(row: dict, output: str, source: str) -> bool:
        kind = classify_output(output, row["target"])
        if kind in RIGHT_KINDS or not output.strip():
            return False
        pairs.append(preference_row(row, output, kind, source))
        counts[source] += 1
        return True

    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        outputs = answer([[r["messages"][0]] for r in block])
        right = []
        for row, output in zip(block, outputs):
            if len(pairs) == n_pairs:
                break
            counts["requests"] += 1
            if not add(row, output, "policy"):
                (right.append(row) if output.strip() else counts.update(["empty"]))
        if sample is not None and right:
            for row, output in zip(right, sample([[r["messages"][0]] for r in right])):
                if len(pairs) == n_pairs or not add(row, output, "policy_sample"):
                    counts["right"] += 1
        else:
            counts["right"] += len(right)
        if len(pairs) == n_pairs:
            break
    kinds = Counter(p["rejected_kind"] for p in pairs)
    return pairs, {"requests": counts["requests"], "right": counts["right"], "empty": counts["empty"], "pairs": len(pairs),
                   "from_greedy": counts["policy"], "from_samples": counts["policy_sample"], "kinds": dict(sorted(kinds.items()))}


def sampled_pairs(sample, rows: list[dict], n_pairs: int, samples: int, chunk: int = 32,
                  max_per_request: int = 2) -> tuple[list[dict], dict]:
    """`samples` sampled answers per request, no greedy pass: each distinct wrong answer (at most `max_per_request`
    per request, so one hard request cannot fill the split) becomes a pair against the exact JSON. For a policy
    that is almost always right greedily (the full quickstart adapter), its errors live only in its samples; this
    pairs exactly the mistakes its sampling distribution makes (rejection-sampling preference data, as in
    Pang et al. 2024, "Iterative reasoning preference optimization", whose DPO+NLL loss is the RPO term here).
    `sample(conversations) -> list[str]` draws independently per entry. Returns (pairs, counts)."""
    pairs: list[dict] = []
    counts: Counter = Counter()
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        outputs = sample([[r["messages"][0]] for r in block for _ in range(samples)])
        for i, row in enumerate(block):
            if len(pairs) == n_pairs:
                break
            answers = outputs[i * samples : (i + 1) * samples]
            kinds = [classify_output(a, row["target"]) if a.strip() else "empty" for a in answers]
            counts.update(requests=1, samples=samples, right_samples=sum(k in RIGHT_KINDS for k in kinds),
                          empty_samples=kinds.count("empty"))
            wrong = list(dict.fromkeys((a, k) for a, k in zip(answers, kinds) if k not in RIGHT_KINDS and k != "empty"))
            counts["right"] += not wrong
            for output, kind in wrong[:max_per_request]:
                if len(pairs) == n_pairs:
                    break
                pairs.append(preference_row(row, output, kind, "policy_sample"))
        if len(pairs) == n_pairs:
            break
    kinds = Counter(p["rejected_kind"] for p in pairs)
    return pairs, {"requests": counts["requests"], "right": counts["right"], "empty": counts["empty_samples"],
                   "pairs": len(pairs), "from_greedy": 0, "from_samples": len(pairs), "samples": counts["samples"],
                   "right_samples": counts["right_samples"], "kinds": dict(sorted(kinds.items()))}


def dropped_value_pairs(rows: list[dict], n: int, missing: tuple[str, ...] = ("time", "party_size")) -> list[dict]:
    """Counter-pairs on complete requests: the stated value preferred to null (`rejected_kind: dropped_value`).
    Trained on incomplete requests alone, DPO learns "null is preferred" and writes null everywhere
    (notes/align-pref.md, session 6); these pairs mark the other side of the rule."""
    return [preference_row(r, target_json({**r["target"], missing[i % len(missing)]: None}), "dropped_value", "synthetic")
            for i, r in enumerate(rows[:n])]


def _interleave(a: list, b: list) -> list:
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b):] + b[len(a):]


def write_policy_prefs(out_dir: str | Path, answer, n_train: int, n_eval: int, seed: int = 0,
                       max_requests_factor: int = 6, source: dict | None = None, sample=None,
                       samples_per_request: int = 1, incomplete: bool = False) -> dict:
    """Write train.jsonl / eval.jsonl of on-policy pairs and manifest.json (counts, source); return the manifest.

    `samples_per_request` > 1 (needs `sample`): the sampled-only mode of `sampled_pairs`, no greedy answers.
    At most `max_requests_factor` x n requests are tried per split; a policy that is right too often to fill
    a split raises with the counts (so the user can lower n or use a weaker starting point).
    `incomplete`: half the pairs (rounded up) on requests that leave the time or the party size out
    (`incomplete_request_splits`; chosen has null there, rejected is the policy's answer), half on complete
    requests (`dropped_value_pairs`); the first 100 held-out incomplete requests are also written as
    eval_requests.jsonl (the `task make-data` format) to score the behaviour with `task score`.
    """
    if samples_per_request > 1 and sample is None:
        raise TunesmithError("samples per request > 1 needs a sampling temperature > 0")
    splits = incomplete_request_splits if incomplete else pref_request_splits
    n_eval_rows = max(max_requests_factor * n_eval, 100) if incomplete else max_requests_factor * n_eval
    train_rows, eval_rows = splits(max_requests_factor * n_train, n_eval_rows, seed)
    manifest: dict = {"source": source or {}, "seed": seed}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = dict(zip(("train", "eval"), pref_request_splits(n_train, n_eval, seed))) if incomplete else {}
    for name, rows, n in (("train", train_rows, n_train), ("eval", eval_rows, n_eval)):
        n_policy = n - n // 2 if incomplete else n
        pairs, counts = sampled_pairs(sample, rows, n_policy, samples_per_request) if samples_per_request > 1 \
            else policy_pairs(answer, rows, n_policy, sample=sample)
        if incomplete and len(pairs) == n_policy:
            pairs = _interleave(pairs, dropped_value_pairs(complete[name], n // 2))
            counts = {**counts, "pairs": len(pairs), "from_synthetic": n // 2, "kinds": dict(sorted(Counter(p["rejected_kind"] for p in pairs).items()))}
        if len(pairs) < n:
            raise TunesmithError(
                f"{name}: only {len(pairs)} of {n} wanted pairs after {counts['requests']} requests "
                f"({counts['right']} answered right, {counts['empty']} empty); lower --n-{name} or start from a weaker adapter")
        write_jsonl(out / f"{name}.jsonl", pairs)
        manifest[name] = counts
    if incomplete:
        write_jsonl(out / "eval_requests.jsonl", eval_rows[:100])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
