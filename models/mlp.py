"""Fully connected networks on flattened 28x28 images."""

import torch.nn as nn

from compress.registry import register_model


class MLP(nn.Module):
    """Flatten, then Linear + ReLU for each hidden width, then a Linear classifier."""

    def __init__(self, widths: list[int], num_classes: int = 10, in_features: int = 784):
        super().__init__()
        sizes = [in_features, *widths]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@register_model
def simplenet(num_classes: int = 10, hidden: int = 128) -> nn.Module:
    """784-128-10 MLP: the network of the original L1 + pruning recipe."""
    return MLP([hidden], num_classes)


@register_model
def lenet300(num_classes: int = 10) -> nn.Module:
    """LeNet-300-100: 784-300-100-10 MLP (Deep Compression, Table 1)."""
    return MLP([300, 100], num_classes)
