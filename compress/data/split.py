"""Seeded, stratified splits: the validation part of a training split, or a test part.

    split_dataset(images, labels, validation=0.1, seed=0)       # every source, in place
    keep, held = stratified_split(labels, fraction=0.1, seed=0)  # the indices alone
    x_train, x_val = x[keep], x[held]

A source reads "train" (and "test", "val" when its files have them) and hands them to
`split_dataset`: without a test split, a `test_fraction` of "train" becomes "test" first;
then, without a validation split of the source's own, the `validation` fraction of what is
left becomes "val". This is the one place that decides which splits are drawn.

Each class gives round(fraction * its count) samples to the held part (at least one when
the class has two or more and the fraction is above zero), chosen by a generator seeded
with `seed`, so every run and every stage sees the same split. Both index lists are sorted:
the held-out samples keep the order they had in the file.
"""

from __future__ import annotations

import numpy as np
import torch

from compress.data.store import SampleStore
from compress.errors import DataError

DEFAULT_TEST_FRACTION = 0.2  # of the training files, when a source has no test files


def split_dataset(
    images: dict[str, torch.Tensor | SampleStore],
    labels: dict[str, torch.Tensor],
    validation: float,
    seed: int,
    test_fraction: float | None = None,
) -> None:
    """Make the splits "train", "val" and "test" in place from "train" (and "test", "val",
    if read): the test part first (only when there is no "test"), then the validation part
    (only when there is no "val": a source's own validation split, such as speakers that
    train has not, is kept and `validation` is not drawn), each stratified and seeded with
    `seed`."""
    if "test" not in images:
        fraction = test_fraction or DEFAULT_TEST_FRACTION
        kept, held = stratified_split(labels["train"], fraction, seed, what="test")
        split_off(images, labels, "train", "test", held, kept)
    if "val" not in images:
        kept, held = stratified_split(labels["train"], validation, seed)
        split_off(images, labels, "train", "val", held, kept)


def split_off(
    images: dict[str, torch.Tensor | SampleStore],
    labels: dict[str, torch.Tensor],
    source: str,
    target: str,
    held: torch.Tensor,
    kept: torch.Tensor,
) -> None:
    """Move the samples `held` of split `source` into a new split `target`, in place (the
    split is made on the labels: a SampleStore's samples stay unread)."""
    images[target], labels[target] = _take(images[source], held), labels[source][held]
    images[source], labels[source] = _take(images[source], kept), labels[source][kept]


def _take(samples: torch.Tensor | SampleStore, index: torch.Tensor) -> torch.Tensor | SampleStore:
    return samples.subset(index) if isinstance(samples, SampleStore) else samples[index]


def stratified_split(
    labels: torch.Tensor | np.ndarray, fraction: float, seed: int, what: str = "validation"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept indices, held-out indices), both sorted; `fraction` of each class is held out."""
    y = torch.as_tensor(np.asarray(labels)).long()
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"{what} fraction {fraction} must be at least 0 and below 1")
    if fraction == 0.0 or len(y) == 0:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    held = []
    for cls in torch.unique(y).tolist():
        members = torch.nonzero(y == cls).flatten()
        count = int(round(fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)  # every class keeps a training sample
        else:
            count = 0
        if count:
            held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held_index = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held_index] = False
    kept = torch.nonzero(mask).flatten()
    if len(held_index) == 0:
        raise DataError(
            f"the {what} split is empty: {len(y)} samples are too few for {what} = {fraction}; "
            "use a larger fraction or more data"
        )
    return kept, held_index
