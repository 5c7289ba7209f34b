"""Seeded, stratified splits: the validation part of a training split, or a test part.

    keep, held = stratified_split(labels, fraction=0.1, seed=0)
    x_train, x_val = x[keep], x[held]

Each class gives round(fraction * its count) samples to the held part (at least one when
the class has two or more and the fraction is above zero), chosen by a generator seeded
with `seed`, so every run and every stage sees the same split. Both index lists are sorted:
the held-out samples keep the order they had in the file.
"""

from __future__ import annotations

import numpy as np
import torch

from compress.errors import DataError


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
