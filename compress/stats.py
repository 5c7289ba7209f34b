"""Confidence intervals for accuracy differences measured on the same test images.

    low, high = paired_bootstrap_ci(correct_artifact, correct_dense)   # points, 95%

On MNIST 0.1 point is 10 images, so a difference between two artifacts means little without
its uncertainty. Both were run on the same images: the paired bootstrap resamples image
indices (with replacement, a fixed seed) and recomputes the mean of
correct_artifact - correct_dense on each resample; the interval is the 2.5th and 97.5th
percentiles of those means. Identical predictions give exactly [0, 0].
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
SEED = 0
_CHUNK = 200  # resamples drawn at once: 200 x 10,000 indices is 16 MB


def paired_bootstrap_ci(
    correct: np.ndarray,
    baseline_correct: np.ndarray,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = SEED,
) -> tuple[float, float]:
    """Interval of mean(correct - baseline_correct), in percentage points."""
    correct = np.asarray(correct, dtype=bool)
    baseline_correct = np.asarray(baseline_correct, dtype=bool)
    if correct.shape != baseline_correct.shape or correct.ndim != 1 or len(correct) == 0:
        raise ValueError(f"need two equal-length 1-d arrays, got {correct.shape} and {baseline_correct.shape}")
    diff = correct.astype(np.int32) - baseline_correct.astype(np.int32)
    n = len(diff)
    if not diff.any():  # no image changed: every resample is 0
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    sums = np.concatenate([
        diff[rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))].sum(axis=1)
        for start in range(0, resamples, _CHUNK)
    ])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(100 * sums / n, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def pack_correct(correct: np.ndarray) -> np.ndarray:
    """Per-image correctness as bits (10,000 images: 1,250 bytes)."""
    return np.packbits(np.asarray(correct, dtype=bool))


def unpack_correct(bits: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(bits, count=count).astype(bool)
