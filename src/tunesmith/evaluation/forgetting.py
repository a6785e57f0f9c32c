"""Forgetting: retention = score_after / score_before on general-ability probe suites (ALGORITHMS.md, Forgetting).

For lower-is-better metrics (perplexity) the ratio is inverted (before / after), so retention < 1 always
means "got worse". A probe whose retention falls under the configured threshold is flagged.
"""

from __future__ import annotations

# The headline metrics of each suite kind: what retention is reported on.
PRIMARY = {
    "likelihood": ["perplexity", "bits_per_byte"],
    "multiple_choice": ["acc", "acc_norm"],
    "generation": ["rougeL", "exact_match", "regex_match", "json_field_match"],
    "ifeval": ["prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose"],
    "quickstart_json": ["exact_match", "field_accuracy"],
    "judge": ["mean_rating", "win_rate"],
    "safety": ["attack_success_rate", "over_refusal_rate"],
    "preference": ["reward_accuracy", "rm_accuracy", "logp_accuracy"],
}


def retention_ratio(before: float, after: float, higher_is_better: bool) -> float | None:
    """after / before (higher is better) or before / after (lower is better); None when undefined."""
    num, den = (after, before) if higher_is_better else (before, after)
    if den == 0:
        return None if num != 0 else 1.0
    return num / den


def retention(before: dict, after: dict, kind: str, threshold: float) -> list[dict]:
    """One row per headline metric of a probe suite: before, after, retention, flagged."""
    rows = []
    for metric in PRIMARY.get(kind, []):
        if metric not in before["metrics"] or metric not in after["metrics"]:
            continue
        hib = before["directions"].get(metric, True)
        b, a = before["metrics"][metric], after["metrics"][metric]
        ratio = retention_ratio(b, a, hib)
        rows.append({"metric": metric, "before": b, "after": a, "higher_is_better": hib, "retention": ratio,
                     "flagged": ratio is not None and ratio < threshold})
    return rows


def forgetting_report(results: dict, suites: dict[str, str], probes: list[str], baseline: str, threshold: float) -> dict:
    """{model: {probe suite: [rows]}} for every non-baseline model; `results[model][suite]` are suite results."""
    out: dict[str, dict] = {}
    for model, per_suite in results.items():
        if model == baseline:
            continue
        out[model] = {s: retention(results[baseline][s], per_suite[s], suites[s], threshold)
                      for s in probes if "metrics" in per_suite.get(s, {}) and "metrics" in results[baseline].get(s, {})}
    return {"baseline": baseline, "threshold": threshold, "probes": probes, "models": out,
            "flagged": [f"{m}/{s}/{r['metric']}" for m, ps in out.items() for s, rows in ps.items() for r in rows if r["flagged"]]}
