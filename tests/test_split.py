"""Seeded, stratified splits (validation and test_fraction)."""

from __future__ import annotations

import pytest
import torch

from compress.data.split import stratified_split
from compress.errors import DataError


def test_each_class_gives_its_share_and_the_parts_partition_the_samples():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert torch.bincount(labels[held]).tolist() == [5, 3, 2]
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(100))
    assert torch.equal(kept, torch.sort(kept).values) and torch.equal(held, torch.sort(held).values)


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    labels = torch.arange(200) % 4
    assert torch.equal(stratified_split(labels, 0.2, 3)[1], stratified_split(labels, 0.2, 3)[1])
    assert not torch.equal(stratified_split(labels, 0.2, 3)[1], stratified_split(labels, 0.2, 4)[1])


def test_a_small_class_gives_one_sample_and_keeps_one():
    labels = torch.tensor([0] * 40 + [1] * 2 + [2])
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert torch.bincount(labels[held], minlength=3).tolist() == [4, 1, 0]
    assert 2 in labels[kept].tolist()  # a class of one sample stays in training


def test_too_few_samples_for_any_held_out_part_is_an_error():
    with pytest.raises(DataError, match="validation split is empty: 3 samples are too few"):
        stratified_split(torch.tensor([0, 1, 2]), 0.1, seed=0)
