"""Pruning on convolutional networks: every Linear and Conv (grouped and depthwise
included) is pruned, the zeros survive fine-tuning and export; with BatchNorm, magnitude
ranks the folded weights, statistics are measured again, and a gutted layer is reported."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

from compress.config import PruneConfig
from compress.pruning import (
    apply_masks,
    make_permanent,
    prunable_layers,
    prune_oneshot,
    sparsity_summary,
)
from compress.pruning.batchnorm import batchnorm_scales, recalibrate_batchnorm
from compress.stages.export import export_onnx
from compress.stages.prune import nearly_empty_layers


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
    assert model.grouped.weight.shape == (8, 4, 3, 3) and model.depthwise.weight.shape == (
        8,
        1,
        3,
        3,
    )


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
        assert any(
            a.size == masks[name].numel() and int((a == 0).sum()) >= zeros for a in stored.values()
        ), name
    assert np.isfinite(next(iter(stored.values()))).all()


# --- BatchNorm: ranking that survives rescaling, statistics measured again, warnings

BN_FOLLOWED = [
    "stem",
    "grouped",
    "depthwise",
    "pointwise",
]  # mix and fc have no BatchNorm after them


def calibrated(model: SmallCNN, x: torch.Tensor) -> SmallCNN:
    recalibrate_batchnorm(model, [x[:32], x[32:]])
    return model.eval()


def test_the_batchnorm_after_each_layer_is_found_by_running_the_model():
    model = cnn()
    scales = batchnorm_scales(model, torch.randn(4, 1, 12, 12))
    assert list(scales) == BN_FOLLOWED
    bn = model.bn1
    torch.testing.assert_close(
        scales["grouped"], bn.weight.abs().detach() / (bn.running_var + bn.eps).sqrt()
    )


def test_global_magnitude_ranks_batchnorm_layers_independently_of_their_weight_scale():
    x = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    config = PruneConfig(method="magnitude", amount=0.6, scope="global")
    model = calibrated(cnn(), x)
    reference = prune_oneshot(copy.deepcopy(model), config, sample=x[:8])
    for factor in (0.1, 0.01):
        shrunk = copy.deepcopy(model)
        with torch.no_grad():  # BatchNorm divides this scale out: the network computes the same
            shrunk.grouped.weight.mul_(factor)
        shrunk = calibrated(shrunk, x)
        rescaled = prune_oneshot(copy.deepcopy(shrunk), config, sample=x[:8])
        # The same masks but for BatchNorm's eps, added to a variance factor^2 times smaller.
        same = sum(int((rescaled[n] == reference[n]).sum()) for n in LAYERS)
        assert same >= (0.99 if factor == 0.1 else 0.85) * sum(
            m.numel() for m in reference.values()
        )
        assert int(rescaled["grouped"].sum()) >= 0.5 * int(reference["grouped"].sum())
        assert not nearly_empty_layers(_summary(rescaled))
        # Ranked by raw |w| (no sample: no BatchNorm seen), the shrunk layer goes entirely.
        raw = prune_oneshot(copy.deepcopy(shrunk), config)
        assert int(raw["grouped"].sum()) == 0
        assert "layer grouped keeps 0 of 288 weights" in " ".join(
            nearly_empty_layers(_summary(raw))
        )


def _summary(masks: dict[str, torch.Tensor]) -> dict[str, dict]:
    return {
        n: {"params": m.numel(), "zeros": int((~m).sum()), "sparsity": float((~m).float().mean())}
        for n, m in masks.items()
    }


def test_recalibration_measures_the_pruned_layers_statistics_again():
    x = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    model = calibrated(cnn(), x)
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.7, scope="global"), sample=x[:8])
    stale = model.bn3.running_mean.clone()
    seen = {}
    hook = model.pointwise.register_forward_hook(
        lambda _m, _a, out: seen.setdefault("out", []).append(out.detach())
    )
    assert recalibrate_batchnorm(model, [x[:32], x[32:]]) == 64
    hook.remove()
    expected = torch.cat(seen["out"]).mean((0, 2, 3))  # equal halves: the mean of the batch means
    torch.testing.assert_close(model.bn3.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(stale, expected)
    assert model.bn3.momentum == 0.1 and not model.training


def test_a_layer_that_loses_nearly_all_its_weights_is_reported():
    model = cnn()
    prune_oneshot(
        model,
        PruneConfig(
            method="magnitude", amount=0.3, scope="layer", overrides={"fc": {"amount": 0.995}}
        ),
    )
    warnings = nearly_empty_layers(sparsity_summary(model)["layers"])
    assert len(warnings) == 1
    assert warnings[0].startswith("prune: layer fc keeps 1 of 160 weights (99.4% removed)")
