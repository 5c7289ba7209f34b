"""Structured pruning (`method = "channels"`): torch-pruning's groups, masks, shrink, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from compress.config import PruneConfig
from compress.errors import CompressError
from compress.pruning import GradualPruner, make_permanent, prune_oneshot
from compress.pruning.shrink import shrink, units

HERE = Path(__file__).parent

# A user's model file: BatchNorm, a residual depthwise-separable block, flatten into Linear.
CNN_SOURCE = """
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))))


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.block = Block(16)
        self.conv = nn.Conv2d(16, 32, 3)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 6 * 6, 64)
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.block(torch.relu(self.bn(self.stem(x))))
        x = torch.relu(self.bn3(self.conv(nn.functional.max_pool2d(x, 2))))
        x = nn.functional.max_pool2d(x, 2)
        return self.out(torch.relu(self.fc(x.flatten(1))))
"""


def cnn(tmp_path: Path) -> nn.Module:
    path = tmp_path / "cnn.py"
    path.write_text(CNN_SOURCE)
    from compress.registry import build_model

    torch.manual_seed(0)
    model = build_model(None, str(path), "Net", {"num_classes": 10})
    return model.eval()


def channels(amount=0.5, round_to=1, **more) -> PruneConfig:
    """The counts `amount` gives exactly, unless `round_to` says otherwise."""
    return PruneConfig(method="channels", amount=amount, round_to=round_to, **more)


EXAMPLE = torch.zeros(1, 1, 28, 28)


@torch.no_grad()
def test_oneshot_channels_masks_whole_units_and_shrink_removes_them(tmp_path):
    model = cnn(tmp_path)
    prune_oneshot(model, channels(0.5, scope="layer"), sample=EXAMPLE)
    make_permanent(model)
    x = torch.randn(4, 1, 28, 28)
    expected = model(x)
    shrink(model, (1, 28, 28))
    # stem and pointwise conv share the residual stream: one group, pruned together
    assert units(model) == {
        "stem": 8,
        "block.dw": 8,
        "block.pw": 8,
        "conv": 16,
        "fc": 32,
        "out": 10,
    }
    assert model.block.dw.groups == 8 and model.bn3.num_features == 16
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


def test_per_layer_overrides_and_global_scope(tmp_path):
    model = cnn(tmp_path)
    prune_oneshot(
        model, channels(0.5, scope="layer", overrides={"fc": {"amount": 0.75}}), sample=EXAMPLE
    )
    make_permanent(model)
    shrink(model, (1, 28, 28))
    assert units(model)["fc"] == 16 and units(model)["conv"] == 16
    model = cnn(tmp_path)
    prune_oneshot(model, channels(0.5, scope="global"), sample=EXAMPLE)
    make_permanent(model)
    shrink(model, (1, 28, 28))
    sizes = units(model)
    assert sizes["stem"] + sizes["conv"] + sizes["fc"] == round(0.5 * (16 + 32 + 64))


@pytest.mark.parametrize("importance", ["group", "l1"])
def test_the_least_important_units_go_first(importance):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor([1.0, 0.01, 1.0, 0.02, 1.0, 1.0]).unsqueeze(1))
        model[2].weight[:, [1, 3]] *= 0.01
    prune_oneshot(model, channels(0.34, importance=importance), sample=torch.zeros(1, 8))
    make_permanent(model)
    dead = (model[0].weight == 0).all(1)
    assert dead.tolist() == [False, True, False, True, False, False]
    assert (model[2].weight[:, dead] == 0).all()  # the columns that read them are masked too


def test_gradual_channels_only_ever_remove_and_reach_the_target(tmp_path):
    model = cnn(tmp_path)
    config = channels(0.75, scope="layer", schedule="gradual", gradual={"steps": 4, "ramp": 1.0})
    pruner = GradualPruner(model, config, sample=EXAMPLE)
    removed = []
    for step in range(1, 5):
        pruner(step, 4)
        removed.append(int((model.fc.weight == 0).all(1).sum()))
    assert removed == sorted(removed) and removed[-1] == 48


def test_channels_needs_an_example_input(tmp_path):
    with pytest.raises(CompressError, match="example input"):
        prune_oneshot(cnn(tmp_path), channels(0.5))


@pytest.mark.slow  # a whole pipeline with a CNN: about 30 s on a busy machine
def test_cnn_pipeline_channel_pruned_shrunk_exported_and_verified(tmp_path, pipeline_file):
    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline

    (tmp_path / "cnn.py").write_text(CNN_SOURCE)
    pipeline = pipeline_file(
        {
            "model": {"path": str(tmp_path / "cnn.py"), "class": "Net"},
            "train.epochs": 1,
            "train.l1": {"lambda": 0.0},
            "prune": {
                "method": "channels",
                "amount": 0.5,
                "round_to": 1,
                "scope": "layer",
                "schedule": "gradual",
                "gradual": {"epochs": 1, "steps": 3, "lr": 0.01},
            },
            "finetune.epochs": 1,
            "quantize.variants": ["static"],
            "export.shrink": True,
            "verify.repetitions": 200,
        }
    )
    report = run_pipeline(load_pipeline(pipeline), out_dir=tmp_path / "run", progress=False)
    export = json.loads((tmp_path / "run" / "export" / "stage.json").read_text())
    layers = export["metrics"]["pruned"]["shrink"]["layers"]
    assert layers["conv"] == {"before": 32, "after": 16} and layers["stem"]["after"] == 8
    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert artifacts["pruned"]["status"] == "ok"  # the shrunk export matches the unshrunk model
    assert artifacts["pruned"]["agreement"] == 1.0
    assert artifacts["pruned"]["params"] < 0.5 * artifacts["dense"]["params"]
    speedup = artifacts["dense"]["latency_ms_b1_p50"] / artifacts["pruned"]["latency_ms_b1_p50"]
    print(f"CNN channels 0.5 + shrink: {speedup:.2f}x faster than dense (batch 1, 1 thread, p50)")


def test_an_override_on_any_coupled_layer_sets_the_amount_of_its_group(tmp_path):
    model = cnn(tmp_path)
    # block.pw is coupled to stem through the residual addition: one group, one amount
    prune_oneshot(
        model,
        channels(0.5, scope="global", overrides={"block.pw": {"amount": 0.75}}),
        sample=EXAMPLE,
    )
    make_permanent(model)
    shrink(model, (1, 28, 28))
    assert units(model)["stem"] == 4 and units(model)["block.pw"] == 4
    assert units(model)["conv"] + units(model)["fc"] == round(0.5 * (32 + 64))


@torch.no_grad()
def test_round_to_keeps_multiples_rounded_up_and_the_most_important_units(tmp_path):
    # 0.7 of 16, 32 and 64 units leaves 5, 10 and 19: rounded up to 8, 16 and 24
    model = cnn(tmp_path)
    prune_oneshot(model, channels(0.7, round_to=8), sample=EXAMPLE)
    make_permanent(model)
    shrink(model, (1, 28, 28))
    assert units(model) == {
        "stem": 8,
        "block.dw": 8,
        "block.pw": 8,
        "conv": 16,
        "fc": 24,
        "out": 10,
    }
    # the units kept are the most important: a multiple of 8 is a superset of round_to = 1's
    plain = cnn(tmp_path)
    prune_oneshot(plain, channels(0.7), sample=EXAMPLE)
    rounded = cnn(tmp_path)
    prune_oneshot(rounded, channels(0.7, round_to=8), sample=EXAMPLE)
    alive = lambda m: set(torch.nonzero((m.fc.weight != 0).any(1)).flatten().tolist())  # noqa: E731
    assert alive(plain) < alive(rounded) and len(alive(plain)) == 19


def test_round_to_keeps_a_layer_whole_when_the_multiple_would_exceed_it(tmp_path):
    model = cnn(tmp_path)
    prune_oneshot(model, channels(0.1, round_to=32), sample=EXAMPLE)  # 16 -> 15: rounds to 32
    make_permanent(model)
    shrink(model, (1, 28, 28))
    assert units(model)["stem"] == 16 and units(model)["conv"] == 32 and units(model)["fc"] == 64
