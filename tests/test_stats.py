import itertools
import math

import pytest

from tasks.blocks import stats


@pytest.mark.parametrize("n, c", [(8, 0), (8, 1), (8, 3), (8, 8), (5, 2)])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n, c):
    correct = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(correct, k))
        assert stats.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="pass@k needs"):
        stats.pass_at_k(4, 5, 1)


def test_curve_ks():
    assert stats.curve_ks(8) == [1, 2, 4, 8]
    assert stats.curve_ks(6) == [1, 2, 4, 6]
    assert stats.curve_ks(2) == [1, 2]


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [1.0, 0.0, 0.5, 0.25, 1.0, 0.0, 0.75, 0.5] * 10
    mean, ci = stats.mean_ci(values)
    assert ci[0] < mean < ci[1]
    assert stats.mean_ci(values) == (mean, ci)  # same values, same interval
    _, wide = stats.mean_ci(values[:20])
    assert wide[1] - wide[0] > ci[1] - ci[0]  # fewer problems, wider interval


def test_bootstrap_interval_covers_a_known_standard_error():
    values = [1.0] * 60 + [0.0] * 140  # p = 0.3 on 200 problems: SE = sqrt(0.3 * 0.7 / 200) = 0.0324
    _, (lo, hi) = stats.mean_ci(values)
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.3 * 0.7 / 200), rel=0.15)


def test_paired_delta_keeps_problems_together():
    before = [0.0, 1.0] * 50
    after = [0.0, 1.0] * 50
    assert stats.paired_delta(before, after) == (0.0, [0.0, 0.0])  # the same problems: no spread at all
    better = [1.0, 1.0] * 50
    delta, ci = stats.paired_delta(before, better)
    assert delta == 0.5 and stats.excludes_zero(ci)
    with pytest.raises(ValueError, match="same problems"):
        stats.paired_delta(before, better[:10])
    with pytest.raises(ValueError, match="at least 2 problems"):
        stats.mean_ci([1.0])


def test_majority_and_best_of():
    assert stats.majority(["5", "4", "5"], [1, 0, 1]) == 1.0
    assert stats.majority(["4", "5"], [0, 1]) == 0.0  # a tie goes to the answer seen first
    assert stats.majority([None, None], [0, 0]) == 0.0
    assert stats.majority([None, "5", "5", "4"], [0, 1, 1, 0]) == 1.0
    assert stats.best_of([0.1, 0.9, 0.5], [0, 1, 0]) == 1.0


def test_majority_at_k_averages_over_subsets():
    answers, correct = ["4", "5", "5"], [0, 1, 1]
    assert stats.majority_at_k(answers, correct, 1) == pytest.approx(2 / 3)  # maj@1 is pass@1
    assert stats.majority_at_k(answers, correct, 2) == pytest.approx(1 / 3)  # ties go to the first: {4,5} twice
    assert stats.majority_at_k(answers, correct, 3) == 1.0


def test_many_subsets_are_sampled_with_a_seed():
    assert len(stats.k_subsets(16, 8)) == stats.MAX_SUBSETS
    assert stats.k_subsets(16, 8, seed=3) == stats.k_subsets(16, 8, seed=3)
    assert len(stats.k_subsets(8, 4)) == math.comb(8, 4)
