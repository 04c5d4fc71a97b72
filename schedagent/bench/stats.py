"""Statistics for A/B comparisons: ratio of medians, bootstrap interval, rank test.

A candidate is judged on samples interleaved with its baseline in one boot. The
verdict is ``better`` or ``worse`` only when both the bootstrap confidence
interval of the ratio of medians excludes 1 and the Mann-Whitney U test rejects
"same distribution" at the same confidence; otherwise ``no-difference``.
Requiring both keeps the false-positive rate at or below the nominal level.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["better", "worse", "no-difference"]
Direction = Literal["lower", "higher"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate against baseline on one metric."""

    baseline_median: float
    candidate_median: float
    ratio: float                 # candidate / baseline
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    verdict: Verdict
    n_baseline: int
    n_candidate: int


def _median_ratio(base: list[float], cand: list[float]) -> float:
    b = statistics.median(base)
    return statistics.median(cand) / b if b else math.inf


def bootstrap_ratio_ci(base: list[float], cand: list[float], confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of median(cand)/median(base)."""
    rng = random.Random(seed)
    ratios = sorted(
        _median_ratio(rng.choices(base, k=len(base)), rng.choices(cand, k=len(cand)))
        for _ in range(resamples))
    alpha = (1 - confidence) / 2
    lo = ratios[int(alpha * (resamples - 1))]
    hi = ratios[math.ceil((1 - alpha) * (resamples - 1))]
    return lo, hi


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided Mann-Whitney U p-value (normal approximation, tie-corrected).

    With fewer than 20 samples in total the exact distribution is computed.
    """
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return 1.0
    pooled = sorted((v, i < n1) for i, v in enumerate([*a, *b]))
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    r1 = sum(r for r, (_, in_a) in zip(ranks, pooled) if in_a)
    u1 = r1 - n1 * (n1 + 1) / 2
    u = min(u1, n1 * n2 - u1)
    if n1 + n2 < 20 and ties == 0:
        return _exact_u_p(u, n1, n2)
    n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u1 - mean) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def _exact_u_p(u: float, n1: int, n2: int) -> float:
    # counts[k] = number of rank arrangements whose U statistic equals k
    counts = [[[0] * (n1 * n2 + 1) for _ in range(n2 + 1)] for _ in range(n1 + 1)]
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            if i == 0 or j == 0:
                counts[i][j][0] = 1
                continue
            for k in range(i * j + 1):
                counts[i][j][k] = (counts[i - 1][j][k - j] if k >= j else 0) + counts[i][j - 1][k]
    total = math.comb(n1 + n2, n1)
    tail = sum(counts[n1][n2][: math.floor(u) + 1])
    return min(1.0, 2 * tail / total)


def compare(base: list[float], cand: list[float], direction: Direction,
            confidence: float = 0.95) -> Comparison:
    """Judge ``cand`` against ``base``; ``direction`` says which way is better."""
    if len(base) < 2 or len(cand) < 2:
        raise ValueError(f"need at least 2 samples per side, got {len(base)} and {len(cand)}")
    ratio = _median_ratio(base, cand)
    lo, hi = bootstrap_ratio_ci(base, cand, confidence)
    p = mann_whitney_p(base, cand)
    verdict: Verdict = "no-difference"
    if p < 1 - confidence and (hi < 1 or lo > 1):
        improved = hi < 1 if direction == "lower" else lo > 1
        verdict = "better" if improved else "worse"
    return Comparison(statistics.median(base), statistics.median(cand), ratio, lo, hi, p,
                      confidence, verdict, len(base), len(cand))
