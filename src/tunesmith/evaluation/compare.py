"""A/B comparison of two models' suite results: per-metric tests (Holm across all metrics of the comparison),
verdicts, a per-category breakdown and the items where the candidate lost most."""

from __future__ import annotations

from tunesmith.evaluation.forgetting import PRIMARY
from tunesmith.evaluation.stats import compare_all


def _both(res_a: dict, res_b: dict, metric: str) -> list[tuple[dict, dict]]:
    """Aligned item pairs where both runs scored `metric` (a metric may cover a subset: safety's harmful prompts,
    judge ratings that parsed)."""
    return [(ia, ib) for ia, ib in zip(res_a["items"], res_b["items"]) if metric in ia["scores"] and metric in ib["scores"]]


def _paired(res_a: dict, res_b: dict) -> dict[str, tuple[list[float], list[float], bool]]:
    """Per-item score lists for every metric, over the items both runs scored it on (items align by position)."""
    items_a, items_b = res_a["items"], res_b["items"]
    if len(items_a) != len(items_b) or not items_a:
        return {}
    names = set().union(*(set(i["scores"]) for i in items_a + items_b))
    out = {}
    for m in sorted(names):
        pairs = _both(res_a, res_b, m)
        if pairs:
            out[m] = ([ia["scores"][m] for ia, _ in pairs], [ib["scores"][m] for _, ib in pairs], res_a["directions"].get(m, True))
    return out


def _headline(kind: str, paired: dict) -> str | None:
    for metric in PRIMARY.get(kind, []):
        if metric in paired:
            return metric
    return next(iter(paired), None)


def breakdown(res_a: dict, res_b: dict, metric: str, higher_is_better: bool, worst: int) -> dict:
    """Mean of `metric` per category for both models, and the `worst` items where B fell furthest behind A."""
    cats: dict[str, list[tuple[float, float]]] = {}
    both = _both(res_a, res_b, metric)
    for ia, ib in both:
        cats.setdefault(ia.get("category", "all"), []).append((ia["scores"][metric], ib["scores"][metric]))
    per_category = {c: {"n": len(v), "mean_a": sum(a for a, _ in v) / len(v), "mean_b": sum(b for _, b in v) / len(v)}
                    for c, v in sorted(cats.items())}
    sign = 1 if higher_is_better else -1
    losses = sorted(((sign * (ib["scores"][metric] - ia["scores"][metric]), ia, ib) for ia, ib in both), key=lambda t: t[0])
    worst_items = [{"id": ia["id"], "category": ia.get("category"), "score_a": ia["scores"][metric], "score_b": ib["scores"][metric],
                    "output_a": ia.get("output"), "output_b": ib.get("output"), "reference": ia.get("reference")}
                   for delta, ia, ib in losses[:worst] if delta < 0]
    return {"metric": metric, "per_category": per_category, "worst_examples": worst_items}


def compare_models(res_a: dict[str, dict], res_b: dict[str, dict], kinds: dict[str, str], name_a: str, name_b: str,
                   alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0, worst: int = 5) -> dict:
    """{suite: {"metrics": {metric: test result + verdict}, "breakdown": ...}} for suites both models completed."""
    per_metric, owners, paired_by_suite = {}, {}, {}
    for suite, kind in kinds.items():
        a, b = res_a.get(suite), res_b.get(suite)
        if not a or not b or "error" in a or "error" in b:
            continue
        paired = _paired(a, b)
        paired_by_suite[suite] = paired
        for metric, triple in paired.items():
            per_metric[f"{suite}/{metric}"] = triple
            owners[f"{suite}/{metric}"] = (suite, metric)
    tested = compare_all(per_metric, name_a, name_b, alpha, n_resamples, seed) if per_metric else {}
    out: dict[str, dict] = {}
    for key, result in tested.items():
        suite, metric = owners[key]
        out.setdefault(suite, {"metrics": {}})["metrics"][metric] = result
    for suite, paired in paired_by_suite.items():
        head = _headline(kinds[suite], paired)
        if head is not None and suite in out:
            out[suite]["breakdown"] = breakdown(res_a[suite], res_b[suite], head, paired[head][2], worst)
    return {"a": name_a, "b": name_b, "alpha": alpha, "correction": "holm", "suites": out}
