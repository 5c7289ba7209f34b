"""Batch-1 latency of several onnxruntime sessions, timed interleaved in rounds, and each
one's latency relative to the first (the baseline, dense) with an interval.

    times = timed_rounds(sessions, inputs, repetitions=200, rounds=20)   # [session][round][call]
    rows = summarize(times)     # per session: p50, p95 (ms), vs_base, vs_base_low, vs_base_high

Each round runs `repetitions / rounds` timed calls of every session in turn, starting with a
different session each round, so load on the machine falls on every session alike. Round r
gives one ratio per session: its median call in r over the baseline's median call in r
(the two were timed seconds apart, under the same load). `vs_base` is the median of those
per-round ratios and [vs_base_low, vs_base_high] its distribution-free 95% interval: the
order statistics of the ratios that hold the true median with at least 95% probability
(the sign-test interval; no assumption on how the ratios are distributed, so one round
hit by a burst of load moves neither end much). It needs 6 rounds or more; below that the
interval is the range of the ratios, which holds the median with less than 95%.

This module needs only numpy and the standard library: a bundle's benchmark script
(compress.bundle) carries its source as it is, so a device times its artifacts the same way.
"""

from __future__ import annotations

import math
import time

import numpy as np

LEVEL = 0.95  # the interval's coverage of the median per-round ratio
WARMUP = 20  # untimed calls per session before the first round


def timed_rounds(sessions, inputs, repetitions: int, rounds: int, on_round=None) -> list:
    """Seconds of each timed call: [session][round][call], after a warm-up.

    `inputs[i]` are session i's samples (batch dimension first), taken one at a time in
    turn; `on_round`, when given, is called after each round (a progress bar)."""
    rounds = max(1, min(rounds, repetitions))
    per_round = -(-repetitions // rounds)
    samples = [[x[i % len(x)][None] for i in range(per_round)] for x in inputs]
    names = [s.get_inputs()[0].name for s in sessions]
    for session, name, own in zip(sessions, names, samples, strict=True):
        for sample in own[: min(WARMUP, per_round)]:
            session.run(None, {name: sample})
    times = [[[] for _ in range(rounds)] for _ in sessions]
    for r in range(rounds):
        for k in range(len(sessions)):
            i = (r + k) % len(sessions)
            session, name, calls = sessions[i], names[i], times[i][r]
            for sample in samples[i]:
                started = time.perf_counter()
                session.run(None, {name: sample})
                calls.append(time.perf_counter() - started)
        if on_round is not None:
            on_round()
    return times


def median_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(median, low, high): the median of `values` and its distribution-free interval.

    With n values sorted, [x_k, x_(n+1-k)] (1-based) holds the population median with
    probability 1 - 2 P(Binomial(n, 1/2) < k); k is the largest for which that is at least
    `level`, or 1 (the range) when no k reaches it (n < 6 at 95%)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    k, below = 1, 0.0  # below: P(Binomial(n, 1/2) <= k - 1)
    while True:
        below_next = below + math.comb(n, k) / 2**n  # P(B <= k)
        if 1 - 2 * below_next < level or k + 1 > (n + 1) / 2:
            break
        k, below = k + 1, below_next
    return float(np.median(x)), float(x[k - 1]), float(x[n - k])


def summarize(times: list, base: int = 0, level: float = LEVEL) -> list[dict]:
    """Per session: p50 and p95 in ms over all its calls, and vs_base with its interval."""
    medians = [np.array([np.median(calls) for calls in rounds]) for rounds in times]
    rows = []
    for session_times, session_medians in zip(times, medians, strict=True):
        every = np.concatenate([np.asarray(c, dtype=float) for c in session_times])
        ratio, low, high = median_interval(session_medians / medians[base], level)
        rows.append(
            {
                "p50": float(np.percentile(every, 50) * 1e3),
                "p95": float(np.percentile(every, 95) * 1e3),
                "vs_base": ratio,
                "vs_base_low": low,
                "vs_base_high": high,
            }
        )
    return rows
