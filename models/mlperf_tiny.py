"""The MLPerf Tiny reference models (mlcommons/tiny, benchmark/training/), layer for layer.

    [model]
    name = "ds_cnn"          # keyword spotting: a (1, 49, 10) MFCC "image", 12 classes
    name = "resnet8"         # CIFAR-10: (3, 32, 32), 10 classes; kwargs = { filters = 16 }
    name = "mobilenet_v1"    # visual wake words: (3, 96, 96), 2 classes; kwargs = { alpha = 0.25 }

Each follows the reference's Keras layer plan: the same layers, widths, kernels, strides,
biases (Keras' Conv2D and DepthwiseConv2D have one, even before BatchNorm), dropout and
pooling, so the parameter counts are the reference's (docs/models.md). Keras' "same"
padding is reproduced exactly, not just in shape: at stride 2 on an even size TensorFlow
pads one row at the bottom and none at the top, where PyTorch's symmetric padding would
shift every window by one pixel (`same_conv`). BatchNorm uses Keras' epsilon (1e-3);
its momentum stays PyTorch's (0.1, Keras' 0.99 written the other way round would be 0.01),
which settles the running statistics within the short schedules this package runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.errors import CompressError
from compress.registry import register_model

KERAS_BN_EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding along one axis: (before, after), the odd one after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class PadConv2d(nn.Conv2d):
    """A Conv2d that zero-pads its input (left, right, top, bottom) first: TensorFlow's
    uneven "same" padding, which Conv2d's own (even) padding cannot express. The exported
    file has no Pad node (the pads go into the Conv's own), but the exporter cannot take an
    opset-18 Pad down to 17, so these models export at opset 18 (`[export] opset = 18`)."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def same_conv(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    stride: int,
    size: tuple[int, int],
    groups: int = 1,
) -> tuple[nn.Conv2d, tuple[int, int]]:
    """A conv with Keras' padding="same" for an input of `size` (H, W), and its output size.

    Where TensorFlow pads both sides alike this is a plain Conv2d with that padding; where
    it does not (stride 2 on an even size, an even kernel) a `PadConv2d`."""
    (top, bottom), (left, right) = (
        same_padding(size[0], kernel[0], stride),
        same_padding(size[1], kernel[1], stride),
    )
    out = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    if top == bottom and left == right:
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, (top, left), groups=groups)
        return conv, out
    pad = (left, right, top, bottom)
    return PadConv2d(in_channels, out_channels, kernel, stride, groups=groups, pad=pad), out


def _conv_bn_relu(layers: list[nn.Module], *conv_args, **conv_kwargs) -> tuple[int, int]:
    """Append a `same_conv` + BN + ReLU to `layers`; the map's size after them."""
    conv, size = same_conv(*conv_args, **conv_kwargs)
    layers += [conv, nn.BatchNorm2d(conv.out_channels, eps=KERAS_BN_EPS), nn.ReLU()]
    return size


def _separable(
    layers: list[nn.Module], channels: int, out: int, stride: int, size: tuple[int, int]
) -> tuple[int, int]:
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (the reference's DS block)."""
    size = _conv_bn_relu(layers, channels, channels, (3, 3), stride, size, groups=channels)
    return _conv_bn_relu(layers, channels, out, (1, 1), 1, size)


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise CompressError(
            f"model {name} needs images (C, H, W), got input shape {tuple(input_shape)}"
        )
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def _he_normal(module: nn.Module) -> None:
    """Keras' he_normal weights: a normal of std sqrt(2 / fan_in) cut at 2 std (rescaled so
    the cut one has that std). fan_in is PyTorch's, the weights one output reads (Keras
    counts a depthwise kernel's fan over all its channels). Biases keep PyTorch's small
    uniform start rather than Keras' zeros: an all-zero bias is dropped from the exported
    graph, and the file would then count fewer parameters than the model."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)


def _glorot_uniform(module: nn.Module) -> None:
    """Keras' default initializer, Glorot uniform (weights only: biases as in `_he_normal`)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)


class DSCNN(nn.Module):
    """Conv 10x4 stride 2 + BN + ReLU + dropout 0.2, four depthwise-separable blocks,
    dropout 0.4, average pool, Linear."""

    def __init__(self, num_classes: int, input_shape: Sequence[int], filters: int):
        super().__init__()
        channels, height, width = _image_shape("ds_cnn", input_shape)
        layers: list[nn.Module] = []
        size = _conv_bn_relu(layers, channels, filters, (10, 4), 2, (height, width))
        layers.append(nn.Dropout(0.2))
        for _ in range(4):
            size = _separable(layers, filters, filters, 1, size)
        # The reference pools (H/2, W/2) of the input, rounded down, over the ceil(H/2) x
        # ceil(W/2) map: on 49 rows one window of 24, so the last row is not read.
        pool = (height // 2, width // 2)
        if any(p < 1 or s // p != 1 for s, p in zip(size, pool, strict=True)):
            raise CompressError(
                f"model ds_cnn: input {height}x{width} does not pool to one value per channel "
                f"(map {size[0]}x{size[1]}, pool {pool[0]}x{pool[1]}); use e.g. 49x10"
            )
        layers += [nn.Dropout(0.4), nn.AvgPool2d(pool), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(filters, num_classes)
        _glorot_uniform(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResidualStack(nn.Module):
    """conv3x3 (stride) + BN + ReLU, conv3x3 + BN, added to the input (through a 1x1
    stride-2 conv where the width changes, no BatchNorm on it), then ReLU."""

    def __init__(self, channels: int, out: int, stride: int, size: tuple[int, int]):
        super().__init__()
        self.conv1, self.out_size = same_conv(channels, out, (3, 3), stride, size)
        self.bn1 = nn.BatchNorm2d(out, eps=KERAS_BN_EPS)
        self.conv2, _ = same_conv(out, out, (3, 3), 1, self.out_size)
        self.bn2 = nn.BatchNorm2d(out, eps=KERAS_BN_EPS)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels != out:
            self.shortcut, _ = same_conv(channels, out, (1, 1), stride, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.shortcut(x) + y)


class ResNet8(nn.Module):
    """Conv3x3 + BN + ReLU, three residual stacks (filters, 2x, 4x; stride 1, 2, 2),
    average pool, Linear."""

    def __init__(self, num_classes: int, input_shape: Sequence[int], filters: int):
        super().__init__()
        channels, height, width = _image_shape("resnet8", input_shape)
        self.conv, size = same_conv(channels, filters, (3, 3), 1, (height, width))
        self.bn = nn.BatchNorm2d(filters, eps=KERAS_BN_EPS)
        stacks, width_now = [], filters
        for scale, stride in ((1, 1), (2, 2), (4, 2)):
            stacks.append(ResidualStack(width_now, filters * scale, stride, size))
            size, width_now = stacks[-1].out_size, filters * scale
        self.stacks = nn.Sequential(*stacks)
        # AveragePooling2D(pool_size = the map's smaller side): a global pool on square maps
        self.pool = nn.AvgPool2d(min(size))
        self.fc = nn.Linear(width_now, num_classes)
        _he_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stacks(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# MobileNetV1's depthwise-separable layers: (depthwise stride, pointwise width at alpha 1)
MOBILENET_V1_PLAN = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)]
MOBILENET_V1_PLAN += [(1, 512)] * 5 + [(2, 1024), (1, 1024)]


class MobileNetV1(nn.Module):
    """Conv3x3 stride 2 + BN + ReLU, 13 depthwise-separable layers, global average pool,
    Linear (vww_model.py: ReLU, not ReLU6, and no dropout before the classifier)."""

    def __init__(self, num_classes: int, input_shape: Sequence[int], alpha: float):
        super().__init__()
        channels, height, width = _image_shape("mobilenet_v1", input_shape)
        widths = [int(32 * alpha)] + [int(w * alpha) for _, w in MOBILENET_V1_PLAN]
        layers: list[nn.Module] = []
        size = _conv_bn_relu(layers, channels, widths[0], (3, 3), 2, (height, width))
        for (stride, _), before, after in zip(
            MOBILENET_V1_PLAN, widths[:-1], widths[1:], strict=True
        ):
            size = _separable(layers, before, after, stride, size)
        layers += [nn.AvgPool2d(size), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)
        _he_normal(self.features)  # the reference's Dense keeps Keras' default, Glorot
        _glorot_uniform(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def ds_cnn(
    num_classes: int = 12, input_shape: Sequence[int] = (1, 49, 10), filters: int = 64
) -> nn.Module:
    """MLPerf Tiny keyword spotting DS-CNN: 10x4 conv + 4 depthwise-separable blocks, 64 ch."""
    if filters < 1:
        raise CompressError(f"model ds_cnn: filters must be >= 1, got {filters}")
    return DSCNN(num_classes, input_shape, int(filters))


@register_model
def resnet8(
    num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), filters: int = 16
) -> nn.Module:
    """MLPerf Tiny image classification ResNet-8: 3 residual stacks, filters/2x/4x channels."""
    if filters < 1:
        raise CompressError(f"model resnet8: filters must be >= 1, got {filters}")
    return ResNet8(num_classes, input_shape, int(filters))


@register_model
def mobilenet_v1(
    num_classes: int = 2, input_shape: Sequence[int] = (3, 96, 96), alpha: float = 0.25
) -> nn.Module:
    """MLPerf Tiny visual wake words MobileNetV1 (width alpha, default 0.25), 96x96 RGB."""
    if int(32 * alpha) < 1:
        raise CompressError(f"model mobilenet_v1: alpha must be >= 1/32, got {alpha}")
    return MobileNetV1(num_classes, input_shape, float(alpha))
