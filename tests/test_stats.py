"""The paired bootstrap interval of an accuracy difference."""

from __future__ import annotations

import numpy as np
import pytest

from compress.stats import pack_correct, paired_bootstrap_ci, unpack_correct


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
