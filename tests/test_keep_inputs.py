"""[prune] keep_inputs = k: the k inputs whose first-layer weights have the largest L2 norm are
kept, the others' weights masked, whatever the method; the report then says "uses k of F"
and pruned-inputs.onnx takes k inputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from data_files import write_csv
from tiny_mnist import pipeline_text

from compress.cli import main
from compress.config import GradualConfig, PruneConfig, parse_pipeline
from compress.encode.inputs import input_usage
from compress.errors import CompressError, ConfigError
from compress.pruning import GradualPruner, make_permanent, masks_of, prune_oneshot, strong_inputs
from compress.registry import build_model
from compress.stages.prune import fewer_inputs


def logreg_with_columns(columns: list[list[float]]) -> nn.Module:
    """A Linear [classes, features] whose column j (feature j's outgoing weights) is columns[j]."""
    weight = torch.tensor(columns, dtype=torch.float32).T
    model = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    return model


def keep(k: int, method: str = "threshold", **settings) -> PruneConfig:
    return PruneConfig(
        method=method,
        keep_inputs=k,
        **({"threshold": 0.0} | settings if method == "threshold" else settings),
    )


def test_the_k_features_with_the_largest_l2_norm_are_kept_and_the_others_masked():
    # L2 norms 0.14, 3, 0.71, 1.41, 2.83, 0.2: features 1, 4 and 3 are the strongest
    columns = [[0.1, 0.1], [3.0, 0.0], [0.5, -0.5], [1.0, 1.0], [-2.0, 2.0], [0.0, 0.2]]
    model = logreg_with_columns(columns)
    masks = prune_oneshot(model, keep(3), sample=torch.zeros(4, 6))
    assert masks["0"].any(0).tolist() == [False, True, False, True, True, False]
    assert not masks["0"][:, [0, 2, 5]].any()  # whole columns go
    assert torch.equal(model[0].weight[:, [1, 3, 4]], torch.tensor(columns)[[1, 3, 4]].T)
    usage = input_usage(model, (6,))
    assert usage.used == 3 and usage.sentence() == "uses 3 of 6 features"


def test_the_ranking_is_the_l2_group_norm_not_the_sum_of_magnitudes():
    # column 0: L2 3, L1 3; column 1: L2 2, L1 4 (SelectFromModel's norm over classes is L2 too)
    model = logreg_with_columns([[3.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    prune_oneshot(model, keep(1), sample=torch.zeros(1, 2))
    assert input_usage(model, (2,)).mask.tolist() == [True, False]


def test_ties_go_to_the_lower_index():
    model = logreg_with_columns([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [0.5, 0.0]])
    prune_oneshot(model, keep(2), sample=torch.zeros(1, 5))
    assert input_usage(model, (5,)).mask.tolist() == [True, True, False, False, False]


def test_it_ranks_the_weights_the_method_left_and_only_removes_more():
    model = logreg_with_columns(
        [[0.04, 0.04, 0.04], [0.9, 0.0, 0.0], [0.3, 0.3, 0.3], [0.2, 0.2, 0.0]]
    )
    # threshold 0.05 empties column 0 (L2 0.07 before it) and keeps the larger weights of the rest
    masks = prune_oneshot(model, keep(2, threshold=0.05), sample=torch.zeros(1, 4))
    assert input_usage(model, (4,)).mask.tolist() == [False, True, True, False]
    assert masks["0"][:, 1].tolist() == [True, False, False]  # the method's own zeros stay


def test_when_the_method_left_fewer_than_k_inputs_the_model_reads_those_and_the_stage_warns():
    model = logreg_with_columns([[0.01, 0.01], [0.9, 0.2], [0.02, 0.0], [0.3, 0.3]])
    prune_oneshot(model, keep(3, threshold=0.05), sample=torch.zeros(1, 4))
    assert input_usage(model, (4,)).mask.tolist() == [False, True, False, True]
    assert strong_inputs(model, (4,)) == 2
    assert fewer_inputs(3, 2) == [
        "prune: keep_inputs = 3, but the method left only 2 inputs with non-zero "
        "first-layer weights, so the model reads those; lower its strength to keep more"
    ]
    assert fewer_inputs(3, 3) == []


@pytest.mark.parametrize(
    "method, settings", [("magnitude", {"amount": 0.5}), ("channels", {"amount": 0.25})]
)
def test_every_method_ends_with_exactly_k_inputs_of_a_hidden_layer_model(method, settings):
    torch.manual_seed(0)
    model = build_model("mlp", kwargs={"num_classes": 2, "input_shape": [12], "hidden": [8]})
    prune_oneshot(model, keep(5, method, **settings), sample=torch.randn(4, 12))
    usage = input_usage(model, (12,))
    assert usage.used == 5 and usage.first_layers == ("net.1",)


def test_pixels_of_an_image_read_by_a_linear_are_kept_in_every_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    masks = prune_oneshot(model, keep(5), sample=torch.zeros(1, 2, 4, 4))
    usage = input_usage(model, (2, 4, 4))
    assert usage.unit == "pixels" and usage.used == 5
    columns = masks["1"].any(0).view(2, 16)
    assert torch.equal(columns[0], columns[1])  # a pixel keeps both its channels or neither


def test_channels_of_an_image_read_by_a_grouped_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, groups=2)
    with torch.no_grad():
        conv.weight.mul_(0.01)
        conv.weight[2:, 1] = 1.0  # group 2 (channels 2 and 3): channel 3 is by far the strongest
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 4, 6, 6))
    prune_oneshot(model, keep(1, layers=["0"]), sample=torch.zeros(1, 4, 6, 6))
    usage = input_usage(model, (4, 6, 6))
    assert usage.unit == "channels" and usage.mask.tolist() == [False, False, False, True]


def test_gradual_pruning_keeps_the_inputs_at_the_end_of_its_ramp():
    torch.manual_seed(0)
    model = build_model("mlp", kwargs={"num_classes": 2, "input_shape": [10], "hidden": [6]})
    config = keep(
        4, "magnitude", amount=0.5, schedule="gradual", gradual=GradualConfig(steps=2, ramp=0.5)
    )
    pruner = GradualPruner(model, config, sample=torch.randn(4, 10))
    pruner(1, 8)  # step 1 of 2: masks, but every input still read
    assert input_usage(model, (10,)).used == 10
    pruner(4, 8)  # the last step: the 4 strongest inputs
    assert input_usage(model, (10,)).used == 4
    masks = masks_of(model)
    make_permanent(model)
    assert masks["net.1"].any(0).sum() == 4


def test_keep_inputs_must_be_at_least_one():
    with pytest.raises(ConfigError) as error:
        parse_pipeline({"prune": {"keep_inputs": 0}}, name="x")
    assert str(error.value).splitlines() == [
        "prune.keep_inputs: Input should be greater than 0 (got 0)"
    ]


def test_more_inputs_than_the_model_reads_is_an_error():
    with pytest.raises(
        CompressError,
        match=r"^prune.keep_inputs = 7, but the model reads 6 features: choose 1 to 6$",
    ):
        prune_oneshot(logreg_with_columns([[1.0]] * 6), keep(7), sample=torch.zeros(1, 6))


def test_a_model_that_transforms_its_input_before_any_layer_is_an_error():
    model = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 2))
    with pytest.raises(
        CompressError, match="no Linear or Conv of the model reads its input directly"
    ):
        prune_oneshot(model, keep(2), sample=torch.zeros(2, 6))


class ConvAndLinear(nn.Module):
    """A Conv and a Linear both read the image: a Linear's columns are pixels, not channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.linear = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.conv(x).flatten(1)[:, :2] + self.linear(x.flatten(1))


@pytest.mark.parametrize(
    "model, shape",
    [
        (ConvAndLinear(), (2, 4, 4)),
        # a Linear along the last axis: a column is a whole image column
        (nn.Sequential(nn.Linear(4, 2), nn.Flatten(), nn.Linear(16, 2)), (2, 4, 4)),
    ],
)
def test_first_layers_whose_weights_are_not_one_group_per_input_are_an_error(model, shape):
    with pytest.raises(CompressError, match="reads the input in a way whose weights are not one"):
        prune_oneshot(model, keep(1), sample=torch.zeros(1, *shape))


def test_keep_inputs_needs_the_sample_that_finds_the_first_layer():
    with pytest.raises(CompressError, match="needs a batch of inputs"):
        prune_oneshot(logreg_with_columns([[1.0]] * 3), keep(2))


FEATURES = [f"x{i}" for i in range(6)]


def write_table(path, n: int = 160):
    """Six features; the label follows x1 + x4, the others are noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).round(4)
    labels = np.where(x[:, 1] + x[:, 4] > 0, "yes", "no")
    return write_csv(
        path,
        [*FEATURES, "y"],
        [[*row, label] for row, label in zip(x.tolist(), labels, strict=True)],
    )


def table_pipeline(tmp_path, keep_inputs: int):
    write_table(tmp_path / "t.csv")
    path = tmp_path / "p.toml"
    path.write_text(
        pipeline_text(
            None,
            data={
                "name": "csv",
                "train": "t.csv",
                "test_fraction": 0.25,
                "label": "y",
                "batch_size": 16,
            },
            model={"name": "logreg", "kwargs": None},
            train={"epochs": 4, "lr": 0.1, "momentum": 0.5},
            prune={"threshold": 0.0, "keep_inputs": keep_inputs},
            export={"drop_unused_inputs": True},
        ).replace('[data]\nname = "mnist"\n', "[data]\n")
    )
    return path


@pytest.mark.slow
def test_a_table_run_reports_k_of_f_features_and_pruned_inputs_onnx_takes_k(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(table_pipeline(tmp_path, 2)), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["used"] == 2 and report["inputs"]["names"] == ["x1", "x4"]
    assert "pruned model uses 2 of 6 features: x1, x4" in result.output
    model = onnx.load(str(out / "export" / "pruned-inputs.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [2]
    rows = {a["name"]: a for a in report["artifacts"]}
    assert rows["pruned-inputs"]["accuracy"] == rows["pruned"]["accuracy"] > 0.8


def test_a_run_asking_for_more_inputs_than_the_table_has_stops_before_training(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(table_pipeline(tmp_path, 9)), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: prune.keep_inputs = 9, but the model reads 6 features: choose 1 to 6"
    )
    assert not (out / "train").exists()
