"""A/B statistics: A/A comparisons say no-difference, real shifts are found."""

from __future__ import annotations

import random

import pytest

from schedagent.bench.stats import compare, mann_whitney_p


def test_false_positive_rate_is_at_most_five_percent() -> None:
    rng = random.Random(42)
    trials, false_positives = 400, 0
    for _ in range(trials):
        a = [rng.lognormvariate(0, 0.2) for _ in range(8)]
        b = [rng.lognormvariate(0, 0.2) for _ in range(8)]
        false_positives += compare(a, b, "lower").verdict != "no-difference"
    assert false_positives / trials <= 0.05, false_positives


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


def test_too_few_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        compare([1.0], [1.0, 2.0], "lower")
