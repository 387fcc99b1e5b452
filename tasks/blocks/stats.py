"""The statistics every evaluation number carries: bootstrap intervals, paired deltas, pass@k and maj@k curves.

    mean_ci(values)                  # (mean, [lo, hi]): 95% percentile bootstrap over problems
    paired_delta(a, b)               # (mean(b - a), [lo, hi]): the same resampled problems for both models
    pass_at_k(n, c, k)               # unbiased pass@k of one problem (Chen et al. 2021)
    majority_at_k(answers, correct, k)   # expected maj@k of one problem over its k-subsets

A problem is the unit of resampling: its k samples stay together (they are correlated), so an interval is as wide
as the number of independent problems makes it. Resampling is seeded: the same per-problem values give the same
interval.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
MIN_PROBLEMS = 2  # a bootstrap over fewer problems has no spread to report
MAX_SUBSETS = 256  # maj@k and best-of-N: every k-subset up to this many, else this many seeded random ones


def _check(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) < MIN_PROBLEMS:
        raise ValueError(f"a bootstrap needs per-problem values of at least {MIN_PROBLEMS} problems, got {len(array)}")
    return array


def _interval(means: np.ndarray) -> list[float]:
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_ci(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, list[float]]:
    """The mean of per-problem values and its 95% percentile-bootstrap interval (problems resampled)."""
    array = _check(values)
    index = np.random.default_rng(seed).integers(0, len(array), size=(resamples, len(array)))
    return float(array.mean()), _interval(array[index].mean(axis=1))


def paired_delta(before: Sequence[float], after: Sequence[float], seed: int = 0,
                 resamples: int = RESAMPLES) -> tuple[float, list[float]]:
    """mean(after) - mean(before) over the same problems, with a paired 95% bootstrap interval."""
    a, b = _check(before), _check(after)
    if len(a) != len(b):
        raise ValueError(f"a paired delta needs the same problems: {len(a)} vs {len(b)} values")
    return mean_ci(b - a, seed, resamples)


def excludes_zero(interval: Sequence[float]) -> bool:
    return interval[0] > 0 or interval[1] < 0


def curve_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n, and n itself."""
    ks = [2 ** i for i in range(int(math.log2(n)) + 1)]
    return ks if ks[-1] == n else [*ks, n]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of k samples drawn from n (c of them correct) is correct:
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def k_subsets(n: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Every k-subset of range(n) (in sample order) when there are at most MAX_SUBSETS, else that many random ones."""
    if math.comb(n, k) <= MAX_SUBSETS:
        return list(itertools.combinations(range(n), k))
    rng = np.random.default_rng(seed)
    return [tuple(sorted(rng.choice(n, size=k, replace=False).tolist())) for _ in range(MAX_SUBSETS)]


def majority(answers: Sequence[str | None], correct: Sequence[float]) -> float:
    """Is the most frequent final answer correct? Ties go to the answer seen first; no answer at all is wrong."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return float(correct[answers.index(winner)])


def best_of(scores: Sequence[float], correct: Sequence[float]) -> float:
    """Is the sample a selector scores highest correct? (Ties go to the first.)"""
    return float(correct[int(np.argmax(np.asarray(scores)))])


def subset_mean(n: int, k: int, select: Callable[[tuple[int, ...]], float], seed: int = 0) -> float:
    """The mean of `select(subset)` over the k-subsets of n samples (all of them, or MAX_SUBSETS random ones)."""
    subsets = k_subsets(n, k, seed)
    return sum(select(s) for s in subsets) / len(subsets)


def majority_at_k(answers: Sequence[str | None], correct: Sequence[float], k: int, seed: int = 0) -> float:
    """Expected maj@k of one problem: the majority vote of k of its n samples, averaged over k-subsets."""
    return subset_mean(len(answers), k, lambda s: majority([answers[i] for i in s], [correct[i] for i in s]), seed)


def best_of_k(scores: Sequence[float], correct: Sequence[float], k: int, seed: int = 0) -> float:
    """Expected best-of-k of one problem: the top-scored of k of its n samples, averaged over k-subsets."""
    return subset_mean(len(scores), k, lambda s: best_of([scores[i] for i in s], [correct[i] for i in s]), seed)
