"""The paired bootstrap interval of an accuracy difference."""

from __future__ import annotations

import numpy as np
import pytest

from compress.stats import (
    at_chance,
    chance_accuracy,
    chance_bound,
    pack_correct,
    paired_bootstrap_ci,
    unpack_correct,
)


def test_identical_predictions_give_a_zero_interval():
    correct = np.random.default_rng(1).random(1000) < 0.9
    assert paired_bootstrap_ci(correct, correct) == (0.0, 0.0)


def test_a_known_difference_lies_inside_its_interval_and_the_interval_narrows_with_more_images():
    rng = np.random.default_rng(2)
    widths = []
    for n in (1000, 10_000):
        base = rng.random(n) < 0.98
        other = base.copy()
        flip = rng.choice(n, size=n // 100, replace=False)  # 1% of images change ...
        other[flip[: n // 200]] = True
        other[flip[n // 200 :]] = False  # ... about half to right, half to wrong
        delta = 100 * (other.mean() - base.mean())
        low, high = paired_bootstrap_ci(other, base)
        assert low <= delta <= high and low < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_a_clear_loss_has_an_interval_below_zero():
    base = np.ones(2000, dtype=bool)
    worse = base.copy()
    worse[:40] = False  # -2 points on every resample that draws any of them
    low, high = paired_bootstrap_ci(worse, base)
    assert high < 0 and low <= -2.0 <= high


def test_the_interval_is_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.9
    assert paired_bootstrap_ci(a, b) == paired_bootstrap_ci(a, b)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap_ci(np.ones(3, bool), np.ones(4, bool))


def test_correctness_round_trips_through_bits():
    correct = np.random.default_rng(4).random(1001) < 0.5
    bits = pack_correct(correct)
    assert bits.nbytes == 126
    np.testing.assert_array_equal(unpack_correct(bits, len(correct)), correct)


# --- at chance: no better than answering the most frequent class, although training learned


def test_chance_is_the_share_of_the_most_frequent_class():
    assert chance_accuracy(np.repeat(np.arange(10), 1000)) == 0.1
    assert chance_accuracy(np.array([0, 0, 0, 1])) == 0.75  # an unbalanced test set


def test_at_chance_allows_three_binomial_standard_errors_above_chance():
    balanced = np.repeat(np.arange(10), 1000)  # 10,000 images: the bound is 10.9%
    assert chance_bound(balanced) == pytest.approx(0.109)
    assert at_chance(0.1000, 0.89, balanced) and at_chance(0.1089, 0.89, balanced)
    assert not at_chance(0.1091, 0.89, balanced)
    five_hundred = np.repeat(np.arange(10), 50)
    assert chance_bound(five_hundred) == pytest.approx(0.1 + 3 * np.sqrt(0.09 / 500))
    assert chance_bound(five_hundred) == pytest.approx(0.140, abs=5e-4)  # as the README says


def test_at_chance_needs_a_training_accuracy_clearly_above_it():
    balanced = np.repeat(np.arange(10), 1000)
    assert at_chance(0.10, 0.21, balanced)  # LEARNED (10 points) above the bound of 10.9%
    assert not at_chance(0.10, 0.20, balanced)  # a task the model could not learn either
    assert not at_chance(0.10, None, balanced)  # no epoch trained: nothing to compare with
