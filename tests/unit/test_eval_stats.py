"""A/B statistics against hand computations and straightforward reference implementations."""

from __future__ import annotations

import itertools
from math import comb, sqrt

import numpy as np
import pytest
from scipy.stats import binomtest

from tunesmith.evaluation.stats import compare_all, compare_metric, holm, mcnemar_exact, paired_bootstrap, sign_test, verdict, wilcoxon


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 8 items only B passes, 2 only A passes, 10 both pass, 5 both fail
    a = [0] * 8 + [1] * 2 + [1] * 10 + [0] * 5
    b = [1] * 8 + [0] * 2 + [1] * 10 + [0] * 5
    res = mcnemar_exact(a, b)
    assert (res["b_only"], res["a_only"]) == (8, 2)
    by_hand = 2 * (comb(10, 0) + comb(10, 1) + comb(10, 2)) / 2**10  # = 0.109375
    assert res["p_value"] == pytest.approx(by_hand) == pytest.approx(0.109375)
    assert res["p_value"] == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0  # no discordant pairs
    assert mcnemar_exact([0] * 5, [1] * 5)["p_value"] == pytest.approx(2 / 32)


def test_sign_test_drops_ties_and_matches_binomtest():
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    b = [2.0, 3.0, 4.0, 5.0, 6.0, 5.0, 7.0]  # 5 up, 1 down, 1 tie
    res = sign_test(a, b)
    assert (res["b_higher"], res["a_higher"]) == (5, 1)
    assert res["p_value"] == pytest.approx(binomtest(1, 6, 0.5).pvalue) == pytest.approx(14 / 64)


def _wilcoxon_exact_reference(diffs: list[float]) -> float:
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns (no ties)."""
    ranks = np.argsort(np.argsort(np.abs(diffs))) + 1
    w_plus = sum(r for r, d in zip(ranks, diffs) if d > 0)
    n = len(diffs)
    total = n * (n + 1) / 2
    stats = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=n)]
    extreme = min(w_plus, total - w_plus)
    return min(1.0, 2 * sum(1 for w in stats if w <= extreme) / 2**n)


def test_wilcoxon_matches_exact_enumeration():
    a = [0.0] * 8
    b = [0.5, -1.25, 2.0, 3.5, -0.25, 4.0, 1.5, 5.0]
    assert wilcoxon(a, b)["p_value"] == pytest.approx(_wilcoxon_exact_reference(b))
    assert wilcoxon([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0  # all differences zero


def test_bootstrap_on_known_cases():
    const = paired_bootstrap([0.0] * 50, [0.5] * 50)
    assert const["mean_diff"] == 0.5 and const["ci_low"] == 0.5 and const["ci_high"] == 0.5 and const["p_value"] == 0.0
    # 400 paired 0/1 outcomes, difference +1 on 120 items, -1 on 40: the percentile CI is close to the normal one
    diffs = np.array([1] * 120 + [-1] * 40 + [0] * 240, dtype=float)
    res = paired_bootstrap(np.zeros(400).tolist(), diffs.tolist(), n_resamples=4000, seed=1)
    se = diffs.std() / sqrt(len(diffs))
    assert res["mean_diff"] == pytest.approx(0.2)
    assert res["ci_low"] == pytest.approx(0.2 - 1.96 * se, abs=0.25 * se)
    assert res["ci_high"] == pytest.approx(0.2 + 1.96 * se, abs=0.25 * se)
    assert res["p_value"] < 0.01
    # a balanced difference is not significant and its CI covers zero
    even = paired_bootstrap([0.0] * 40, [1.0, -1.0] * 20)
    assert even["ci_low"] < 0 < even["ci_high"] and even["p_value"] > 0.5


def test_holm_on_the_textbook_example():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_compare_picks_the_test_and_verdict_respects_direction():
    binary = compare_metric([0] * 20, [1] * 12 + [0] * 8)
    assert binary["test"] == "mcnemar_exact" and binary["p_value"] == pytest.approx(2 / 2**12)
    assert verdict(binary, "base", "tuned") == f"tuned better, p={binary['p_value']:.3g}"
    graded = compare_metric([3.0, 2.5, 4.0, 3.2, 2.8, 3.9, 3.3, 3.0], [2.0, 1.5, 3.1, 2.2, 1.7, 2.5, 2.0, 2.2], higher_is_better=False)
    assert graded["test"] == "wilcoxon" and "sign_test" in graded
    assert verdict(graded, "base", "tuned").startswith("tuned better")  # lower loss is better
    same = compare_metric([1, 0, 1, 0], [1, 0, 1, 0])
    assert verdict(same) == "no significant difference (p=1)"


def test_compare_all_applies_holm_across_metrics():
    per = {"m1": ([0] * 30, [1] * 30, True), "m2": ([0] * 10, [0] * 9 + [1], True)}
    res = compare_all(per, "A", "B")
    raw = [res["m1"]["p_value"], res["m2"]["p_value"]]
    assert [res["m1"]["p_holm"], res["m2"]["p_holm"]] == pytest.approx(holm(raw))
    assert res["m1"]["verdict"].startswith("B better") and res["m2"]["verdict"].startswith("no significant")
