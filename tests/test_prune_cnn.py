"""Pruning on convolutional networks: every Linear and Conv (grouped and depthwise
included) is pruned, the zeros survive fine-tuning and export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

from compress.config import PruneConfig
from compress.pruning import apply_masks, make_permanent, prunable_layers, prune_oneshot
from compress.stages.export import export_onnx


class SmallCNN(nn.Module):
    """BatchNorm, a grouped conv, a depthwise-separable pair, a residual add, a Conv1d head."""

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(channels, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.mix = nn.Conv1d(16, 16, 1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = x + torch.relu(self.bn1(self.grouped(x)))  # residual
        x = torch.relu(self.bn2(self.depthwise(x)))
        x = torch.relu(self.bn3(self.pointwise(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 4).flatten(2)  # [N, 16, 16]
        return self.fc(self.mix(x).mean(2))


LAYERS = ["stem", "grouped", "depthwise", "pointwise", "mix", "fc"]


def cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN()


def test_every_linear_and_conv_is_prunable_grouped_and_depthwise_included():
    model = cnn()
    assert list(prunable_layers(model)) == LAYERS
    assert model.grouped.weight.shape == (8, 4, 3, 3) and model.depthwise.weight.shape == (8, 1, 3, 3)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning_reaches_the_amount_on_grouped_and_depthwise_convs(scope):
    model = cnn()
    masks = prune_oneshot(model, PruneConfig(method="magnitude", amount=0.5, scope=scope))
    assert set(masks) == set(LAYERS)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)
    if scope == "layer":
        for name, mask in masks.items():
            assert int((~mask).sum()) == round(0.5 * mask.numel()), name


def test_pruned_grouped_and_depthwise_zeros_survive_finetuning_and_export(tmp_path):
    model = cnn()
    masks = prune_oneshot(model, PruneConfig(method="magnitude", amount=0.6, scope="layer"))
    make_permanent(model)
    apply_masks(model, masks)  # fine-tuning holds the masks
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.train()(x), y).backward()
        optimizer.step()
    make_permanent(model)
    for name in ("grouped", "depthwise"):
        weight = getattr(model, name).weight
        assert torch.all(weight[~masks[name]] == 0)
    path = tmp_path / "cnn.onnx"
    export_onnx(model, (1, 12, 12), path, 18, {})
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    for name in ("grouped", "depthwise"):
        zeros = int((~masks[name]).sum())
        assert any(a.size == masks[name].numel() and int((a == 0).sum()) >= zeros for a in stored.values()), name
    assert np.isfinite(next(iter(stored.values()))).all()
