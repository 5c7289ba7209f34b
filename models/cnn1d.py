"""A small 1-D convolutional network for sequences [T, F]: F signals (channels) over T steps,
e.g. windows of a 3-axis accelerometer [128, 3].

    model = build_model("cnn1d", kwargs={"num_classes": 6}, input_shape=(128, 3))
    model = build_model("cnn1d", kwargs={"num_classes": 6, "channels": [8, 16, 32]}, ...)

Each block is Conv1d (kernel 5, stride 2: halves the time axis) + BatchNorm + ReLU; a
global average over time and one Linear give the logits. The default, channels [16, 32],
has about 3,000 weights on 3 signals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.registry import register_model

KERNEL = 5


class CNN1d(nn.Module):
    def __init__(self, num_classes: int, signals: int, channels: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip([signals, *channels[:-1]], channels, strict=True):
            layers += [
                nn.Conv1d(fan_in, fan_out, KERNEL, stride=2, padding=KERNEL // 2, bias=False),
                nn.BatchNorm1d(fan_out),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [N, T, F] -> [N, F, T]: Conv1d slides over the last axis, with F as its channels.
        x = self.features(x.transpose(1, 2))
        return self.classifier(x.mean(dim=2))


@register_model
def cnn1d(
    num_classes: int = 10,
    channels: Sequence[int] = (16, 32),
    input_shape: Sequence[int] = (128, 3),
) -> nn.Module:
    """Conv1d blocks over time (F signals as channels), global average pool, Linear head."""
    if len(input_shape) != 2:
        raise CompressError(
            f"model cnn1d needs sequences (T, F), got input shape {tuple(input_shape)}"
        )
    if isinstance(channels, int):
        channels = [channels]
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise CompressError(
            f"model cnn1d: channels must be a list of positive widths, got {channels!r}"
        )
    return CNN1d(num_classes, int(input_shape[1]), list(channels))
