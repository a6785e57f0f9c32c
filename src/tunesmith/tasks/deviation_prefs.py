"""On-policy pairs from a policy's likeliest deviations from the exact answer (one forward pass per request).

A strong policy (the full quickstart adapter) is right greedily, so its mistakes only show when it samples,
and sampling them is slow (~1 s an answer here) and finds tail tokens that a DPO step can push down without
changing what the model does. Instead, teacher-force the exact compact JSON and read the policy's next-token
distribution at every answer position: where it puts the most probability on a token other than the exact
one is where it would most likely go wrong when sampled. The pair is {chosen: the exact JSON, rejected: the
exact JSON with that token swapped in} (the rest of the exact answer after it, so it reads as a whole answer;
with `align.rejected_tokens: to_divergence` only the swapped token is trained). Rejected answers the verifier
still accepts (another tokenisation of the same text, other spacing) are skipped and counted, as are requests
where no deviation reaches `min_prob`. The same seeds and request splits as `make-prefs` (disjoint held-out
requests); deterministic for a given model, no sampling.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.json_extract import target_json, write_jsonl
from tunesmith.tasks.json_prefs import classify_output, pref_request_splits
from tunesmith.tasks.policy_prefs import RIGHT_KINDS, preference_row


@torch.no_grad()
def deviation_candidates(model, tokenizer, rows: list[dict], batch_size: int = 16, top: int = 4) -> list[list[tuple[float, str]]]:
    """Per row, up to `top` (probability, rejected text) candidates, likeliest first: at each answer position the
    most probable token other than the exact one, spliced into the exact answer."""
    from tunesmith.data.collate import pad_batch
    from tunesmith.data.formats import Record
    from tunesmith.data.templates import render
    from tunesmith.training.loop import autocast_context

    device = next(model.parameters()).device
    out: list[list[tuple[float, str]]] = []
    for start in range(0, len(rows), batch_size):
        block = rows[start : start + batch_size]
        examples = [render(Record(messages=[r["messages"][0], {"role": "assistant", "content": target_json(r["target"])}]),
                           tokenizer, "last_assistant", 10_000, "truncate") for r in block]
        batch = pad_batch(examples, tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        answers = [[k for k, label in enumerate(e.labels) if label != -100] for e in examples]  # answer token positions
        keep = width - min(a[0] for a in answers) + 1  # the LM head runs only where some row's answer is predicted
        with autocast_context(model):
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), logits_to_keep=keep).logits.float().cpu()
        for i, (e, answer) in enumerate(zip(examples, answers)):
            probs = torch.softmax(logits[i, [k - 1 - (width - keep) for k in answer]], dim=-1)  # token k is predicted at k-1
            tokens = [e.input_ids[k] for k in answer]
            probs[torch.arange(len(answer)), tokens] = 0.0
            best, alt = probs.max(dim=-1)
            cands = []
            for j in best.argsort(descending=True)[: top].tolist():
                head = tokenizer.decode(tokens[:j]) + tokenizer.decode([int(alt[j])], skip_special_tokens=True)
                tail = tokenizer.decode(tokens[j + 1 :], skip_special_tokens=True) if int(alt[j]) not in tokenizer.all_special_ids else ""
                cands.append((float(best[j]), head + tail))
            out.append(cands)
    return out


def deviation_pairs(candidates: list[list[tuple[float, str]]], rows: list[dict], n_pairs: int, min_prob: float,
                    per_request: int = 1) -> tuple[list[dict], dict]:
    """The first `n_pairs` pairs from rows in order: per request its likeliest `per_request` deviations with
    probability >= `min_prob` that the verifier rejects. Returns (pairs, counts)."""
    pairs: list[dict] = []
    counts: Counter = Counter()
    for row, cands in zip(rows, candidates):
        if len(pairs) == n_pairs:
            break
        counts["requests"] += 1
        taken = 0
        for prob, text in cands:
            if prob < min_prob or taken == per_request or len(pairs) == n_pairs:
                break
            kind = classify_output(text, row["target"])
            if kind in RIGHT_KINDS:
                counts["accepted_variants"] += 1
                continue
            pair = preference_row(row, text, kind, "policy_deviation")
            pair["rejected_prob"] = round(prob, 6)
            pairs.append(pair)
            taken += 1
        counts["confident"] += taken == 0
    kinds = Counter(p["rejected_kind"] for p in pairs)
    return pairs, {"requests": counts["requests"], "right": counts["confident"], "empty": 0, "pairs": len(pairs),
                   "from_greedy": 0, "from_samples": 0, "from_deviations": len(pairs),
                   "accepted_variants": counts["accepted_variants"], "kinds": dict(sorted(kinds.items()))}


def write_deviation_prefs(out_dir: str | Path, model, tokenizer, n_train: int, n_eval: int, seed: int = 0,
                          min_prob: float = 0.01, per_request: int = 1, batch_size: int = 16,
                          max_requests_factor: int = 3, source: dict | None = None) -> dict:
    """train.jsonl / eval.jsonl of likeliest-deviation pairs and manifest.json; return the manifest."""
    train_rows, eval_rows = pref_request_splits(max_requests_factor * n_train, max_requests_factor * n_eval, seed)
    manifest: dict = {"source": {**(source or {}), "min_prob": min_prob, "per_request": per_request}, "seed": seed}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows, n in (("train", train_rows, n_train), ("eval", eval_rows, n_eval)):
        pairs: list[dict] = []
        counts: Counter = Counter()
        for start in range(0, len(rows), 4 * batch_size):  # score only as many requests as the split needs
            block = rows[start : start + 4 * batch_size]
            more, c = deviation_pairs(deviation_candidates(model, tokenizer, block, batch_size), block, n - len(pairs), min_prob, per_request)
            pairs += more
            counts.update({k: v for k, v in c.items() if k != "kinds"})
            if len(pairs) == n:
                break
        if len(pairs) < n:
            raise TunesmithError(f"{name}: only {len(pairs)} of {n} wanted pairs after {counts['requests']} requests "
                                 f"({counts['right']} with no deviation >= {min_prob}); lower --min-prob or --n-{name}")
        counts = dict(counts)
        counts["kinds"] = dict(sorted(Counter(p["rejected_kind"] for p in pairs).items()))
        write_jsonl(out / f"{name}.jsonl", pairs)
        manifest[name] = counts
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
