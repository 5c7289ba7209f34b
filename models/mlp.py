"""Fully connected networks on flattened inputs: images (C*H*W pixels) or table rows
(F features)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn

from compress.errors import CompressError
from compress.registry import register_model

MNIST = (1, 28, 28)


class MLP(nn.Module):
    """Flatten, then Linear + ReLU for each hidden width, then a Linear classifier."""

    def __init__(self, widths: Sequence[int], num_classes: int = 10, in_features: int = 784):
        super().__init__()
        sizes = [in_features, *widths]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _features(input_shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in input_shape)


@register_model
def simplenet(
    num_classes: int = 10, hidden: int = 128, input_shape: Sequence[int] = MNIST
) -> nn.Module:
    """784-128-10 MLP: the network of the original L1 + pruning recipe."""
    return MLP([hidden], num_classes, _features(input_shape))


@register_model
def lenet300(num_classes: int = 10, input_shape: Sequence[int] = MNIST) -> nn.Module:
    """LeNet-300-100: 784-300-100-10 MLP (Deep Compression, Table 1)."""
    return MLP([300, 100], num_classes, _features(input_shape))


@register_model
def mlp(
    num_classes: int = 10, hidden: Sequence[int] = (64,), input_shape: Sequence[int] = MNIST
) -> nn.Module:
    """MLP with kwargs hidden = [widths...] on flattened inputs (tables or images)."""
    if isinstance(hidden, int):
        hidden = [hidden]
    if any(not isinstance(w, int) or w < 1 for w in hidden):
        raise CompressError(f"model mlp: hidden must be a list of positive widths, got {hidden!r}")
    return MLP(list(hidden), num_classes, _features(input_shape))


@register_model
def logreg(num_classes: int = 10, input_shape: Sequence[int] = MNIST) -> nn.Module:
    """One Linear layer (multinomial logistic regression; with L1, feature selection)."""
    return MLP([], num_classes, _features(input_shape))
