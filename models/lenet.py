"""Convolutional LeNet-5 as in Caffe's MNIST example."""

import torch.nn as nn

from compress.registry import register_model


class LeNet5(nn.Module):
    """conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500 + ReLU, fc num_classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Linear(500, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def lenet5(num_classes: int = 10) -> nn.Module:
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431k weights)."""
    return LeNet5(num_classes)
