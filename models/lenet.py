"""Convolutional LeNet-5 as in Caffe's MNIST example."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.registry import register_model


class LeNet5(nn.Module):
    """conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500 + ReLU, fc num_classes."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28)):
        super().__init__()
        channels = int(input_shape[0])
        self.features = nn.Sequential(
            nn.Conv2d(channels, 20, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():  # 50 * 4 * 4 on 28x28; other image sizes give other widths
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def lenet5(num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28)) -> nn.Module:
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431k weights)."""
    if len(input_shape) != 3:
        raise CompressError(
            f"model lenet5 needs images (C, H, W), got input shape {tuple(input_shape)}"
        )
    return LeNet5(num_classes, input_shape)
