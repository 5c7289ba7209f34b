"""Physical shrink: dead units and channels removed exactly (logits unchanged), with
torch-pruning's graph."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from compress.pruning.shrink import shrink, units


class Block(nn.Module):
    """Depthwise 3x3 + BatchNorm + ReLU, pointwise 1x1 + BatchNorm, added to the input
    (residual)."""

    def __init__(self, channels: int):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))))


class ResNetLike(nn.Module):
    """Conv + BatchNorm stem, a residual depthwise-separable block, conv, pool, flatten, two
    Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.block = Block(8)
        self.conv = nn.Conv2d(8, 12, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(12 * 6 * 6, 16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.block(torch.relu(self.bn(self.stem(x))))
        x = self.pool(torch.relu(self.conv(nn.functional.max_pool2d(x, 2))))
        return self.out(torch.relu(self.fc(x.flatten(1))))


def randomize_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@torch.no_grad()
def test_linear_chain_removes_dead_units_and_folds_constant_ones():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 10)
    )
    model[1].weight[:5] = (
        0  # 5 units with no inputs: constant relu(bias), folded into the next bias
    )
    model[1].bias[:5] = torch.tensor([0.3, -0.2, 0.0, 0.7, 0.1])
    model[3].weight[:, 5:9] = 0  # 4 units nobody reads
    model[5].weight[:, 15:] = 0  # 5 units of the second layer nobody reads ...
    model[3].weight[2] = 0  # ... and one with no inputs
    x = torch.randn(16, 1, 28, 28)
    expected = logits(model, x)
    report = shrink(model, (1, 28, 28))
    assert units(model) == {"1": 21, "3": 14, "5": 10}
    assert report["layers"]["1"] == {"before": 30, "after": 21}
    assert report["removed"] == 9 + 6
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-5)
    assert model[3].weight.shape == (14, 21)


@torch.no_grad()
def test_a_unit_left_without_readers_by_an_earlier_removal_goes_in_a_later_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model[2].weight[:, 0] = torch.tensor(
        [0.0, 0.0, 0.5]
    )  # unit 0 of layer 0 is read by unit 2 only
    model[4].weight[:, 2] = 0  # unit 2 of layer 2 is read by nobody
    x = torch.randn(8, 6)
    expected = logits(model, x)
    report = shrink(model, (6,))
    assert units(model) == {"0": 3, "2": 2, "4": 2}
    assert report["passes"] >= 2
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_lenet5_conv_channels_through_pool_and_flatten():
    from compress.registry import build_model

    torch.manual_seed(0)
    model = build_model("lenet5", kwargs={"num_classes": 10})
    conv1, conv2, fc1 = model.features[0], model.features[2], model.classifier[1]
    conv1.weight[[1, 4, 7]] = (
        0  # constant channels (LeNet-5 has no ReLU after its convs): folded into conv2's bias
    )
    conv2.weight[:, 10] = 0  # no reader: removed
    conv2.weight[[3, 8]] = 0  # constant through max-pool and flatten: folded into fc1's bias
    fc1.weight[100:180] = 0  # constant relu(bias): folded into the output layer's bias
    x = torch.randn(16, 1, 28, 28)
    expected = logits(model, x)
    shrink(model, (1, 28, 28))
    assert units(model) == {
        "features.0": 16,
        "features.2": 48,
        "classifier.1": 420,
        "classifier.3": 10,
    }
    assert fc1.in_features == 48 * 16
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_residual_batchnorm_and_depthwise_channels():
    torch.manual_seed(0)
    model = ResNetLike()
    randomize_batchnorm(model)
    # Channel 2 of the residual stream: unused by conv and by the block's depthwise conv.
    model.conv.weight[:, 2] = 0
    model.block.dw.weight[2] = 0
    # Channel 5 of the stream: no producer writes it (stem, pointwise), so through
    # BatchNorm + ReLU + add it is a constant; but the depthwise conv (padding 1) reads it,
    # so its border differs: not foldable, must stay.
    model.stem.weight[5] = 0
    model.block.pw.weight[5] = 0
    model.conv.weight[[0, 11]] = 0  # constant through relu, pool, flatten: folded into fc's bias
    x = torch.randn(8, 1, 28, 28)
    expected = logits(model, x)
    shrink(model, (1, 28, 28))
    assert units(model)["stem"] == 7 and units(model)["block.pw"] == 7
    assert model.block.dw.groups == 7 and model.bn.num_features == 7
    assert units(model)["conv"] == 10
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_a_constant_channel_into_a_conv_that_pads_its_input_itself_is_kept():
    from compress_models.mlperf_tiny import PadConv2d

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 1),
        nn.ReLU(),
        PadConv2d(4, 3, 3, 2, pad=(0, 1, 0, 1)),  # pads in forward, conv.padding is 0
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    )
    model[0].weight[1] = 0  # channel 1 outputs relu(0.5) everywhere ...
    model[0].bias[1] = 0.5  # ... but the padded border reads 0: no bias can stand for it
    x = torch.randn(6, 1, 8, 8)
    expected = logits(model, x)
    shrink(model, (1, 8, 8))
    assert units(model)["0"] == 4
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-6)


def test_nothing_dead_changes_nothing():
    torch.manual_seed(0)
    model = ResNetLike()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = shrink(model, (1, 28, 28))
    assert report["removed"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dead", ["inputs", "outputs"])
@torch.no_grad()
def test_a_layer_never_shrinks_to_nothing(dead):
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    if dead == "inputs":
        model[0].weight.zero_()
    else:
        model[2].weight.zero_()
    x = torch.randn(4, 5)
    expected = logits(model, x)
    shrink(model, (5,))
    assert units(model)["0"] == 1
    torch.testing.assert_close(logits(model, x), expected, rtol=0, atol=1e-6)


@pytest.mark.slow  # a whole pipeline: about 20 s on a busy machine
def test_pipeline_with_group_l1_and_shrink_exports_a_smaller_verified_model(
    pipeline_file, tmp_path
):
    import onnx

    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline

    pipeline = pipeline_file(
        {
            "model.kwargs": {"hidden": 32},
            "train.l1": {"lambda": 0.06, "method": "proximal", "groups": ["neurons", "inputs"]},
            "prune.threshold": 0.0,
            "finetune.epochs": 0,
            "quantize.variants": ["static"],
            "export.shrink": True,
        }
    )
    report = run_pipeline(load_pipeline(pipeline), out_dir=tmp_path / "run", progress=False)
    shrunk = read_stage(tmp_path / "run", "export")["metrics"]["pruned"]["shrink"]
    hidden = shrunk["layers"]["net.1"]
    assert hidden["before"] == 32 and 0 < hidden["after"] < 32
    weights = {
        i.name: i for i in onnx.load(str(tmp_path / "run" / "pruned.onnx")).graph.initializer
    }
    assert any(hidden["after"] in tuple(w.dims) for w in weights.values())
    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert (
        artifacts["pruned"]["status"] == "ok"
    )  # matches the unshrunk PyTorch model within tolerance
    assert artifacts["pruned"]["agreement"] == 1.0
    assert artifacts["pruned"]["params"] < artifacts["dense"]["params"]


def read_stage(run_dir, name):
    import json

    return json.loads((run_dir / name / "stage.json").read_text())


@torch.no_grad()
def test_round_to_spares_dead_units_so_each_layer_keeps_a_multiple_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 20), nn.ReLU(), nn.Linear(20, 3)).eval()
    model[0].weight[:7] = 0  # 7 units output relu(bias), a constant folded into the next layer
    model[2].weight[:, 7:12] = 0  # 5 units nobody reads
    x = torch.randn(4, 8)
    expected = model(x)
    plain = copy.deepcopy(model)
    shrink(plain, (8,))
    assert plain[0].out_features == 8
    report = shrink(model, (8,), round_to=16)
    assert model[0].out_features == 16 and report["layers"]["0"]["after"] == 16
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
