"""A/B statistics: A/A comparisons say no-difference, real shifts are found."""

from __future__ import annotations

import itertools
import random

import pytest

from schedagent.bench.stats import (
    bootstrap_ratio_ci,
    compare,
    holm,
    mann_whitney_p,
    min_attainable_p,
    min_windows,
)


def test_false_positive_rate_is_at_most_five_percent() -> None:
    """Issue 13: A/A over 2000 trials sits well under its limit (about 4.5%), so a rule at
    alpha 0.10 (about 7.6%) fails it instead of scraping past on the threshold."""
    rng = random.Random(42)
    trials, false_positives = 2000, 0
    for _ in range(trials):
        a = [rng.lognormvariate(0, 0.2) for _ in range(8)]
        b = [rng.lognormvariate(0, 0.2) for _ in range(8)]
        false_positives += compare(a, b, "lower").verdict != "no-difference"
    assert false_positives <= 0.055 * trials, false_positives


def test_an_interval_that_excludes_one_is_not_enough_without_the_rank_test() -> None:
    # issue 13: the bootstrap interval excludes 1 here, the exact rank test does not reject
    base, cand = [0.8, 0.9, 0.7, 0.9, 1.0, 1.0], [0.7, 0.7, 0.7, 0.7, 1.0, 0.6]
    assert bootstrap_ratio_ci(base, cand)[1] < 1
    result = compare(base, cand, "lower")
    assert result.p_value > 0.05 and result.verdict == "no-difference"


def test_a_clear_improvement_and_regression_are_detected() -> None:
    rng = random.Random(1)
    base = [rng.gauss(100, 3) for _ in range(10)]
    faster = [rng.gauss(80, 3) for _ in range(10)]
    result = compare(base, faster, "lower")
    assert result.verdict == "better" and result.ci_high < 1 and result.p_value < 0.05
    assert 0.75 < result.ratio < 0.85
    assert compare(base, faster, "higher").verdict == "worse"
    assert compare(faster, base, "lower").verdict == "worse"


def test_identical_samples_are_no_difference() -> None:
    same = [1.0, 2.0, 3.0, 4.0]
    result = compare(same, same, "lower")
    assert result.verdict == "no-difference" and result.ratio == 1.0


def test_rank_test_exact_small_samples() -> None:
    # completely separated samples of 4 and 4: two-sided exact p = 2/70
    assert mann_whitney_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert mann_whitney_p([1, 2, 3, 4], [1.5, 2.5, 3.5, 4.5]) > 0.5


def test_rank_test_with_ties_is_exact_not_the_normal_approximation() -> None:
    # issue 13: 4 vs 4 with one tie; the permutation p is 4/70, the normal one 0.036
    assert mann_whitney_p([1, 2, 3, 4], [4, 6, 7, 8]) == pytest.approx(4 / 70)
    assert mann_whitney_p([5, 5, 5], [5, 5, 5]) == 1.0


def test_exact_p_matches_a_full_enumeration() -> None:
    rng = random.Random(7)
    for _ in range(20):
        a = [float(rng.randint(0, 4)) for _ in range(rng.randint(1, 5))]
        b = [float(rng.randint(0, 4)) for _ in range(rng.randint(1, 5))]
        assert mann_whitney_p(a, b) == pytest.approx(_enumerated_p(a, b))


def _enumerated_p(a: list[float], b: list[float]) -> float:
    pooled = sorted([*a, *b])
    rank = {v: (pooled.index(v) + len(pooled) - pooled[::-1].index(v) + 1) / 2 for v in pooled}
    ranks = [rank[v] for v in [*a, *b]]
    mean = len(a) * (len(ranks) + 1) / 2
    obs = abs(sum(ranks[: len(a)]) - mean)
    splits = list(itertools.combinations(range(len(ranks)), len(a)))
    hits = sum(abs(sum(ranks[i] for i in s) - mean) >= obs - 1e-9 for s in splits)
    return hits / len(splits)


def test_minimum_windows_that_can_reach_alpha() -> None:
    assert min_attainable_p(2, 2) == pytest.approx(1 / 3)
    assert min_attainable_p(3, 3) == pytest.approx(0.1)
    assert min_attainable_p(4, 4) == pytest.approx(2 / 70)
    assert min_windows(0.05) == 4 and min_windows(0.05, other=8) == 2


@pytest.mark.parametrize("n", [2, 3])
def test_too_few_samples_to_reach_alpha_is_insufficient_not_a_tie(n: int) -> None:
    # issue 13: 3 vs 3 completely separated still cannot reach p < 0.05
    base, cand = [10.0 + i for i in range(n)], [1.0 + i for i in range(n)]
    assert compare(base, cand, "lower").verdict == "insufficient"
    more = 4 - n
    assert (
        compare(
            base + [13.0 + i for i in range(more)], cand + [4.0 + i for i in range(more)], "lower"
        ).verdict
        == "better"
    )


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="need samples on both sides"):
        compare([], [1.0, 2.0], "lower")


def test_holm_holds_the_family_wise_rate() -> None:
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.01, 0.02, 0.024], 0.05) == [True, True, True]
    assert holm([0.02, 0.02], 0.05) == [True, True]
    assert holm([0.03, 0.9], 0.05) == [False, False]
