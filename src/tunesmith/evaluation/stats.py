"""A/B statistics for two models scored on the same items.

- paired bootstrap CI of the mean difference (Efron & Tibshirani 1993; Koehn 2004 for MT evaluation),
- McNemar's exact test for pass/fail metrics: under H0 the discordant pairs split Binomial(n01 + n10, 1/2),
- sign test and Wilcoxon signed-rank test for graded scores,
- Holm's step-down correction across the metrics of one comparison (Holm 1979).
Differences are always B - A, with the metric's direction deciding which model is "better".
"""

from __future__ import annotations

from math import comb

import numpy as np

BINARY_TOL = 1e-12


def paired_bootstrap(a: list[float], b: list[float], n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Mean of b - a with a percentile bootstrap CI over items, and a two-sided bootstrap p-value."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diff.size == 0:
        return {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_resamples, diff.size))  # (R, n) resampled item indices
    means = diff[idx].mean(axis=1)  # (R,)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return {"mean_diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "p_value": min(1.0, p)}


def mcnemar_exact(a: list[float], b: list[float]) -> dict:
    """Exact McNemar test on paired 0/1 outcomes: p = min(1, 2 * P(X <= min(n01, n10))), X ~ Bin(n01 + n10, 1/2)."""
    n01 = sum(1 for x, y in zip(a, b) if not x and y)  # A fails, B passes
    n10 = sum(1 for x, y in zip(a, b) if x and not y)  # A passes, B fails
    n = n01 + n10
    if n == 0:
        return {"b_only": 0, "a_only": 0, "p_value": 1.0}
    tail = sum(comb(n, k) for k in range(min(n01, n10) + 1)) / 2**n
    return {"b_only": n01, "a_only": n10, "p_value": min(1.0, 2 * tail)}


def sign_test(a: list[float], b: list[float]) -> dict:
    """Two-sided sign test on b - a, ties dropped."""
    pos = sum(1 for x, y in zip(a, b) if y > x)
    neg = sum(1 for x, y in zip(a, b) if y < x)
    n = pos + neg
    if n == 0:
        return {"b_higher": 0, "a_higher": 0, "p_value": 1.0}
    tail = sum(comb(n, k) for k in range(min(pos, neg) + 1)) / 2**n
    return {"b_higher": pos, "a_higher": neg, "p_value": min(1.0, 2 * tail)}


def wilcoxon(a: list[float], b: list[float]) -> dict:
    """Wilcoxon signed-rank test on b - a (zero differences dropped; exact or normal approximation by scipy)."""
    from scipy.stats import wilcoxon as scipy_wilcoxon

    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    nonzero = diff[np.abs(diff) > BINARY_TOL]
    if nonzero.size == 0:
        return {"statistic": 0.0, "p_value": 1.0}
    res = scipy_wilcoxon(nonzero)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue)}


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values: p_(i) * (m - i + 1), made monotone, capped at 1 (same order as input)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p_values[i] * (m - rank)))
        adjusted[i] = running
    return adjusted


def is_binary(values: list[float]) -> bool:
    return all(abs(v) < BINARY_TOL or abs(v - 1) < BINARY_TOL for v in values)


def compare_metric(a: list[float], b: list[float], higher_is_better: bool = True, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Bootstrap CI plus the test that fits: McNemar for 0/1 outcomes, Wilcoxon (and sign test) for scores."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
    out = {"n": len(a), "mean_a": float(np.mean(a)) if a else 0.0, "mean_b": float(np.mean(b)) if b else 0.0,
           "higher_is_better": higher_is_better, "bootstrap": paired_bootstrap(a, b, n_resamples, seed)}
    if is_binary(a) and is_binary(b):
        out["test"], out["detail"] = "mcnemar_exact", mcnemar_exact(a, b)
    else:
        out["test"], out["detail"] = "wilcoxon", wilcoxon(a, b)
        out["sign_test"] = sign_test(a, b)
    out["p_value"] = out["detail"]["p_value"]
    return out


def verdict(result: dict, name_a: str = "A", name_b: str = "B", alpha: float = 0.05) -> str:
    """'B better, p=0.003' / 'A better, p=...' / 'no significant difference (p=...)' from the Holm-adjusted p."""
    p = result.get("p_holm", result["p_value"])
    delta = result["mean_b"] - result["mean_a"]
    if p >= alpha or delta == 0:
        return f"no significant difference (p={p:.3g})"
    b_wins = (delta > 0) == result["higher_is_better"]
    return f"{name_b if b_wins else name_a} better, p={p:.3g}"


def compare_all(per_metric: dict[str, tuple[list[float], list[float], bool]], name_a: str, name_b: str,
                alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """compare_metric for every metric, Holm-adjusted across them, each with its verdict."""
    results = {m: compare_metric(a, b, hib, n_resamples, seed) for m, (a, b, hib) in per_metric.items()}
    adjusted = holm([r["p_value"] for r in results.values()])
    for r, p in zip(results.values(), adjusted):
        r["p_holm"] = p
        r["verdict"] = verdict(r, name_a, name_b, alpha)
    return results
