"""Confidence intervals for accuracy differences measured on the same test images, and
whether an accuracy is no better than chance.

    low, high = paired_bootstrap_ci(correct_artifact, correct_dense)   # points, 95%
    at_chance(accuracy, train_accuracy, test_labels)                   # learned, yet guesses

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
        raise ValueError(
            f"need two equal-length 1-d arrays, got {correct.shape} and {baseline_correct.shape}"
        )
    diff = correct.astype(np.int32) - baseline_correct.astype(np.int32)
    n = len(diff)
    if not diff.any():  # no image changed: every resample is 0
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    sums = np.concatenate(
        [
            diff[rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))].sum(axis=1)
            for start in range(0, resamples, _CHUNK)
        ]
    )
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(100 * sums / n, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def pack_correct(correct: np.ndarray) -> np.ndarray:
    """Per-image correctness as bits (10,000 images: 1,250 bytes)."""
    return np.packbits(np.asarray(correct, dtype=bool))


def unpack_correct(bits: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(bits, count=count).astype(bool)


# "At chance" (docs/reference.md, "What a run prints"): chance is the accuracy of always answering
# the most frequent test class (1 / classes on a balanced test set); a model that ignores its
# input can do no better on average. An accuracy counts as at chance up to CHANCE_SIGMAS
# binomial standard errors above it, sqrt(chance * (1 - chance) / n) for n test samples
# (10 balanced classes: 10.9% on 10,000 images, 14.0% on 500); a guesser exceeds that bound
# about once in 740 runs. It is flagged only when the training accuracy is at least
# LEARNED points above the bound: a model that learned, then lost it in evaluation mode
# (stale BatchNorm statistics) or in compression, not a task that cannot be learned.
CHANCE_SIGMAS = 3.0
LEARNED = 0.10


def chance_accuracy(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class of `labels`."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def chance_bound(labels: np.ndarray, sigmas: float = CHANCE_SIGMAS) -> float:
    """The highest accuracy on `labels` still counted as chance."""
    chance = chance_accuracy(labels)
    return chance + sigmas * float(np.sqrt(chance * (1 - chance) / max(len(labels), 1)))


def at_chance(accuracy: float, train_accuracy: float | None, labels: np.ndarray) -> bool:
    """Whether `accuracy` on `labels` is at chance while training reached clearly more."""
    bound = chance_bound(labels)
    return train_accuracy is not None and accuracy <= bound and train_accuracy >= bound + LEARNED
