"""The MLPerf Tiny reference models (ds_cnn, resnet8, mobilenet_v1): the reference's
parameter counts to the unit, Keras' "same" padding, and the toolchain on them: channel
pruning and shrink through depthwise convolutions, ONNX export, every quantize variant."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from compress_models.mlperf_tiny import PadConv2d, same_conv, same_padding

from compress.cli import main
from compress.config import PruneConfig
from compress.errors import CompressError
from compress.pruning import make_permanent, prune_oneshot
from compress.pruning.shrink import shrink
from compress.registry import build_model
from compress.stages.export import export_onnx
from tests.test_end_to_end_images import write_rgb_folder
from tests.test_export import TOLERANCE, onnx_logits

# name, reference input, classes, (weights and biases of the convs and Dense layers,
# BatchNorm values). Keras' model.summary() counts the same parameters otherwise: its
# "trainable" are the first number plus BatchNorm's gamma and beta (half the second), its
# "non-trainable" BatchNorm's moving mean and variance (the other half). In PyTorch the
# first are the parameters outside BatchNorm, the second BatchNorm's weight, bias,
# running_mean and running_var.
REFERENCE = [
    ("ds_cnn", (1, 49, 10), 12, 22_604, 2_304),  # Keras: 23,756 trainable, 1,152 not
    ("resnet8", (3, 32, 32), 10, 77_706, 960),  # Keras: 78,186 trainable, 480 not
    ("mobilenet_v1", (3, 96, 96), 2, 210_850, 10_944),  # Keras: 216,322 trainable, 5,472 not
]


def counts(model: nn.Module) -> tuple[int, int]:
    """(parameters outside BatchNorm, BatchNorm's four vectors) of `model`."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    in_norms = {id(p) for m in norms for p in m.parameters()}
    weights = sum(p.numel() for p in model.parameters() if id(p) not in in_norms)
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in norms)
    return weights, sum(p.numel() for m in norms for p in m.parameters()) + stats


def conv_output_sizes(model: nn.Module, shape) -> list[tuple[int, int]]:
    sizes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("name, shape, classes, weights, batchnorm", REFERENCE)
def test_each_model_has_the_references_parameter_counts(name, shape, classes, weights, batchnorm):
    model = build_model(name, kwargs={"num_classes": classes}, input_shape=shape)
    assert counts(model) == (weights, batchnorm)
    with torch.no_grad():
        assert model.eval()(torch.randn(3, *shape)).shape == (3, classes)


def test_the_defaults_are_the_references_inputs_and_classes():
    for name, shape, classes, weights, _ in REFERENCE:
        model = build_model(name)
        assert counts(model)[0] == weights, name
        with torch.no_grad():
            assert model.eval()(torch.zeros(1, *shape)).shape == (1, classes)


def test_same_padding_is_tensorflows_with_the_odd_row_at_the_bottom():
    assert same_padding(49, 10, 2) == (4, 5)  # ds_cnn's first conv, rows
    assert same_padding(10, 4, 2) == (1, 1)  # and columns
    assert same_padding(32, 3, 2) == (0, 1)  # stride 2 on an even size: bottom only
    assert same_padding(25, 3, 2) == (1, 1)
    assert same_padding(32, 3, 1) == (1, 1)
    assert same_padding(32, 1, 2) == (0, 0)


def test_a_stride_2_conv_reads_its_windows_where_keras_does():
    conv, size = same_conv(1, 1, (3, 3), 2, (6, 6))
    assert isinstance(conv, PadConv2d) and size == (3, 3)
    nn.init.ones_(conv.weight)
    nn.init.zeros_(conv.bias)
    with torch.no_grad():
        out = conv(torch.ones(1, 1, 6, 6))[0, 0]
    # windows start at row/column 0 (no top/left padding); the last one hangs over the
    # bottom/right edge by one: 9 inputs at the top left, 4 at the bottom right
    assert out[0, 0] == 9 and out[2, 2] == 4 and out[0, 2] == 6
    plain, _ = same_conv(1, 1, (3, 3), 1, (6, 6))
    assert type(plain) is nn.Conv2d and plain.padding == (1, 1)


def test_feature_maps_have_the_keras_shapes():
    ds = conv_output_sizes(build_model("ds_cnn"), (1, 49, 10))
    assert ds == [(25, 5)] * 9  # the 10x4 stride-2 conv, then 4 x (depthwise, pointwise)
    resnet = conv_output_sizes(build_model("resnet8"), (3, 32, 32))
    assert sorted(set(resnet), reverse=True) == [(32, 32), (16, 16), (8, 8)]
    mobile = conv_output_sizes(build_model("mobilenet_v1"), (3, 96, 96))
    assert mobile[0] == (48, 48) and mobile[-1] == (3, 3) and len(mobile) == 1 + 13 * 2


@pytest.mark.parametrize("name", ["resnet8", "mobilenet_v1"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 40, 24)])
def test_the_image_models_take_other_image_sizes(name, shape):
    model = build_model(name, kwargs={"num_classes": 4}, input_shape=shape)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 4)


def test_widths_follow_filters_and_alpha():
    resnet = build_model("resnet8", kwargs={"num_classes": 10, "filters": 26})
    assert {m.out_channels for m in resnet.modules() if isinstance(m, nn.Conv2d)} == {26, 52, 104}
    mobile = build_model("mobilenet_v1", kwargs={"num_classes": 2, "alpha": 0.5})
    convs = [m for m in mobile.modules() if isinstance(m, nn.Conv2d)]
    assert (convs[0].out_channels, convs[-1].out_channels) == (16, 512)
    ds = build_model("ds_cnn", kwargs={"num_classes": 12, "filters": 32})
    assert ds.classifier.in_features == 32


def test_an_input_the_reference_cannot_pool_is_a_one_line_error():
    with pytest.raises(CompressError, match="does not pool to one value per channel"):
        build_model("ds_cnn", kwargs={"num_classes": 12}, input_shape=(1, 3, 3))
    with pytest.raises(CompressError, match="needs images"):
        build_model("resnet8", kwargs={"num_classes": 10}, input_shape=(30,))


def randomize_batchnorm(model: nn.Module) -> None:
    """Trained-looking statistics, so that shrink's exactness is tested on more than
    identity BatchNorms."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=generator)
            m.running_var.uniform_(0.5, 2.0, generator=generator)


# ONNX export is the slow part: once here, for the smallest graph with both depthwise convs
# and a padded stride-2 conv; test_export exports every registered model, the resnet8 run
# below its shrunk one.
@torch.no_grad()
@pytest.mark.parametrize(
    "name, shape, classes, export",
    [
        ("ds_cnn", (1, 49, 10), 12, True),
        ("resnet8", (3, 32, 32), 10, False),
        ("mobilenet_v1", (3, 32, 32), 2, False),
    ],
)
def test_channel_pruning_and_shrink_give_a_smaller_model_that_exports(
    name, shape, classes, export, tmp_path
):
    torch.manual_seed(0)
    model = build_model(name, kwargs={"num_classes": classes}, input_shape=shape).eval()
    randomize_batchnorm(model)
    before = counts(model)[0]
    prune_oneshot(model, PruneConfig(method="channels", amount=0.5), sample=torch.zeros(1, *shape))
    make_permanent(model)
    x = torch.randn(5, *shape)
    expected = model(x)
    report = shrink(model, shape)
    assert report["removed"] > 0
    assert counts(model)[0] < 0.4 * before  # about a quarter: half the channels on both sides
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    for m in model.modules():  # depthwise convs lost the channels their input lost
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels == m.weight.shape[0]
    if not export:
        return
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, shape, path, 18, {})
    np.testing.assert_allclose(onnx_logits(path, x), expected.numpy(), rtol=0, atol=TOLERANCE)


VARIANTS = ["dynamic", "static", "static-int4", "packed-int4", "codebook"]


@pytest.mark.slow
def test_resnet8_on_an_image_folder_end_to_end_with_every_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "fruit"
    write_rgb_folder(root, {"train": 20, "test": 6})
    (tmp_path / "resnet8.toml").write_text(f'''
[data]
name = "imagefolder"
root = "{root}"
image_size = [32, 32]
channels = 3
validation = 0.2
batch_size = 16

[model]
name = "resnet8"

[train]
epochs = 3
optimizer = "adam"
lr = 0.01

[prune]
method = "channels"
amount = 0.5

[finetune]
epochs = 1
lr = 0.001
share = {{ bits = 4, epochs = 1, lr = 1e-4 }}

[quantize]
variants = {json.dumps(VARIANTS)}
calibration_samples = 16

[export]
shrink = true
opset = 18  # uneven "same" padding (F.pad) does not go down to 17 (docs/models.md)

[verify]
repetitions = 3
throughput_batch = 16
''')
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["run", str(tmp_path / "resnet8.toml"), "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {a["name"]: a for a in report["artifacts"]}
    assert len(rows) == 2 + len(VARIANTS)
    # on 18 test images a good score can still be flagged "at chance": only failures count
    assert [n for n, a in rows.items() if not a["status"].startswith(("ok", "warning"))] == []
    assert rows["pruned"]["max_logit_diff"] < 1e-4  # shrunk model = masked model
    assert rows["pruned"]["params"] < 0.4 * rows["dense"]["params"]  # shrunk: half the channels
    assert rows["dense"]["accuracy"] > 0.5  # learned something (chance: 1/3)
