"""ResNet-20 for 32x32 images (He et al., "Deep Residual Learning for Image Recognition",
2016, section 4.2): a 3x3 conv of 16 channels, three stages of three basic blocks at 16,
32 and 64 channels (stride 2 at the start of stages 2 and 3), global average pooling and
one Linear layer; 0.27M parameters.

Shortcuts where the shape changes: option "A" (the paper's CIFAR choice: subsample by 2
and pad the new channels with zeros, no parameters) or "B" (1x1 conv + BatchNorm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.errors import CompressError
from compress.registry import register_model


class PadShortcut(nn.Module):
    """Option A: take every second pixel and zero-pad the channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int, shortcut: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        stages, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1, shortcut))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He initialisation, as in the paper
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def resnet20(
    num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), shortcut: str = "A"
) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels, BatchNorm."""
    if shortcut not in ("A", "B"):
        raise CompressError(
            f"model resnet20: shortcut must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}"
        )
    if len(input_shape) != 3:
        raise CompressError(
            f"model resnet20 needs images (C, H, W), got input shape {tuple(input_shape)}"
        )
    return CifarResNet(3, num_classes, int(input_shape[0]), shortcut)
