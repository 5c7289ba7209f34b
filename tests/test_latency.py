"""Latency relative to dense with an interval over the timing rounds (compress.latency)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress.latency import median_interval, summarize


def test_the_interval_of_20_rounds_is_their_6th_and_15th_smallest_values():
    values = np.arange(1, 21, dtype=float)[::-1]  # the order they come in does not matter
    median, low, high = median_interval(values)
    assert (median, low, high) == (10.5, 6.0, 15.0)
    # 1 - 2 P(Binomial(20, 1/2) <= 5): at least 95%, and the next pair inwards is below
    covered = 1 - 2 * sum(math.comb(20, j) for j in range(6)) / 2**20
    assert covered >= 0.95 > 1 - 2 * sum(math.comb(20, j) for j in range(7)) / 2**20


def test_below_six_rounds_the_interval_is_the_range_and_one_round_is_a_point():
    assert median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert median_interval([1.5]) == (1.5, 1.5, 1.5)
    with pytest.raises(ValueError):
        median_interval([])


def test_the_interval_holds_the_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials = 2000
    held = sum(
        low <= 1.0 <= high
        for low, high in (median_interval(rng.lognormal(0.0, 0.2, 20))[1:] for _ in range(trials))
    )
    assert 0.94 <= held / trials <= 0.975  # 95.9% exactly, for any continuous distribution


def fake_times(rng, scale: float, rounds: int = 20, calls: int = 10, load=None) -> list:
    """Seconds per call [round][call] around `scale` ms, each round slowed by `load[r]`."""
    load = np.ones(rounds) if load is None else load
    return [list(scale * 1e-3 * load[r] * rng.lognormal(0, 0.1, calls)) for r in range(rounds)]


def test_the_baseline_is_1x_and_a_clearly_slower_session_has_its_whole_interval_above_1():
    rng = np.random.default_rng(1)
    load = rng.uniform(1.0, 3.0, 20)  # load that changes from round to round hits both alike
    dense, same, slow = (fake_times(rng, s, load=load) for s in (1.0, 1.0, 1.5))
    rows = summarize([dense, same, slow])
    assert rows[0]["vs_base"] == rows[0]["vs_base_low"] == rows[0]["vs_base_high"] == 1.0
    assert rows[1]["vs_base_low"] < 1.0 < rows[1]["vs_base_high"]
    assert 1.0 < rows[2]["vs_base_low"] <= rows[2]["vs_base"] == pytest.approx(1.5, rel=0.05)
    assert rows[2]["vs_base_high"] < 1.7  # per-round ratios cancel the load: a narrow interval
    every = np.concatenate(slow) * 1e3
    assert rows[2]["p50"] == pytest.approx(np.percentile(every, 50))
    assert rows[2]["p95"] == pytest.approx(np.percentile(every, 95))


def test_a_session_as_fast_as_the_baseline_is_rarely_flagged():
    rng = np.random.default_rng(2)
    flagged = 0
    for _ in range(200):
        load = rng.uniform(1.0, 2.0, 20)
        row = summarize([fake_times(rng, 1.0, load=load), fake_times(rng, 1.0, load=load)])[1]
        flagged += row["vs_base_low"] > 1.0
    assert flagged <= 10  # the low end is above the true ratio in about 2% of runs
