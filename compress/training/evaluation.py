"""Accuracy of a model on a data set's splits, and batched prediction."""

from __future__ import annotations

import torch
import torch.nn as nn

from compress.data import Dataset


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str, batch_size: int, device) -> float:
    """Top-1 accuracy (0..1) of `model` on a whole split (NaN for an empty split: a data set
    loaded without a validation part, as the benchmark does to train on every image)."""
    if data.size(split) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for x, y in data.batches(split, batch_size, shuffle=False):
        correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct / data.size(split)


def accuracies(model: nn.Module, data: Dataset, batch_size: int, device="cpu") -> dict[str, float]:
    """Validation accuracy (what choices are made on) and test accuracy (reported only)."""
    return {
        f"{split}_accuracy": evaluate(model, data, split, batch_size, device)
        for split in ("val", "test")
    }


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )
