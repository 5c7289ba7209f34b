"""The built-in models beyond MNIST (resnet20, mlp, logreg) and torchvision:<name>, on the
shapes of the new data: RGB 32x32 images and table rows; checkpoints rebuild alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from compress.checkpoint import load_checkpoint, model_spec, save_checkpoint
from compress.cli import main
from compress.config import ModelConfig
from compress.encode.onnx_tools import artifact_metadata
from compress.errors import CompressError
from compress.registry import build_model, get_factory
from compress.stages.export import export_onnx
from tests.test_export import TOLERANCE, onnx_logits

RGB = (3, 32, 32)
TABLE = (30,)


def _run(model: nn.Module, shape) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, *shape))


def test_resnet20_is_he_et_al_cifar_resnet():
    model = build_model("resnet20", kwargs={"num_classes": 10}, input_shape=RGB)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert (
        len(convs) == 1 + 3 * 3 * 2
    )  # stem + 3 stages x 3 blocks x 2 convs; option A: no shortcut convs
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs)
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6  # the paper's 0.27M
    assert _run(model, RGB).shape == (2, 10)


def test_resnet20_option_b_uses_1x1_conv_shortcuts():
    model = build_model(
        "resnet20", kwargs={"num_classes": 4, "shortcut": "B"}, input_shape=(1, 28, 28)
    )
    ones = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(ones) == 2  # where stages 2 and 3 change width
    assert _run(model, (1, 28, 28)).shape == (2, 4)


@pytest.mark.parametrize(
    "name, kwargs, layers",
    [
        ("mlp", {"hidden": [16, 8]}, [(16, 30), (8, 16), (3, 8)]),
        ("mlp", {"hidden": []}, [(3, 30)]),
        ("logreg", {}, [(3, 30)]),
    ],
)
def test_mlp_and_logreg_on_table_rows(name, kwargs, layers):
    model = build_model(name, kwargs={"num_classes": 3, **kwargs}, input_shape=TABLE)
    assert [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)] == layers
    assert _run(model, TABLE).shape == (2, 3)


def test_mlp_flattens_images():
    model = build_model("mlp", kwargs={"num_classes": 10, "hidden": [12]}, input_shape=RGB)
    assert model.net[1].in_features == 3 * 32 * 32
    assert _run(model, RGB).shape == (2, 10)


@pytest.mark.parametrize("name", ["simplenet", "lenet300", "lenet5"])
def test_the_mnist_models_follow_the_input_shape(name):
    assert _run(build_model(name, kwargs={"num_classes": 5}, input_shape=RGB), RGB).shape == (2, 5)


def test_a_user_class_gets_input_shape_only_when_it_asks(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(
        "import torch.nn as nn\n"
        "class Shaped(nn.Module):\n"
        "    def __init__(self, num_classes, input_shape):\n"
        "        super().__init__(); self.shape = input_shape\n"
        "        self.fc = nn.Linear(input_shape[0], num_classes)\n"
        "    def forward(self, x): return self.fc(x)\n"
        "class Plain(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__(); self.fc = nn.Linear(7, num_classes)\n"
        "    def forward(self, x): return self.fc(x)\n"
    )
    shaped = build_model(
        path=path, class_name="Shaped", kwargs={"num_classes": 2}, input_shape=(7,)
    )
    assert shaped.shape == (7,)
    assert _run(
        build_model(path=path, class_name="Plain", kwargs={"num_classes": 2}, input_shape=(7,)),
        (7,),
    ).shape == (2, 2)


def test_a_checkpoint_rebuilds_its_model_alone(tmp_path):
    spec = model_spec(ModelConfig(name="mlp", kwargs={"hidden": [5]}), tmp_path, 3, TABLE)
    assert spec["input_shape"] == [30]
    model = build_model("mlp", kwargs={"num_classes": 3, "hidden": [5]}, input_shape=TABLE)
    save_checkpoint(tmp_path / "model.pt", model, spec)
    rebuilt, _, saved = load_checkpoint(tmp_path / "model.pt")
    assert saved == spec
    x = torch.randn(4, 30)
    torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])
def test_torchvision_models_on_small_rgb_and_gray_images(arch):
    for shape in (RGB, (1, 32, 32)):
        model = build_model(f"torchvision:{arch}", kwargs={"num_classes": 6}, input_shape=shape)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        assert (first.in_channels, last.out_features) == (shape[0], 6)
        assert _run(model, shape).shape == (2, 6)


def test_torchvision_kwargs_reach_the_builder():
    model = build_model(
        "torchvision:mobilenet_v2", kwargs={"num_classes": 3, "width_mult": 0.25}, input_shape=RGB
    )
    assert (
        next(m for m in model.modules() if isinstance(m, nn.Conv2d)).out_channels == 8
    )  # 32 * 0.25
    assert _run(model, RGB).shape == (2, 3)


def test_torchvision_models_never_take_pretrained_weights():
    with pytest.raises(CompressError, match="without pretrained weights"):
        build_model(
            "torchvision:resnet18", kwargs={"num_classes": 3, "weights": "DEFAULT"}, input_shape=RGB
        )


def test_an_unknown_torchvision_name_lists_close_matches():
    with pytest.raises(CompressError) as info:
        get_factory("torchvision:mobilenet_v3_smal")
    message = str(info.value)
    assert "\n" not in message
    assert (
        "unknown torchvision model 'mobilenet_v3_smal'; close matches: mobilenet_v3_small"
        in message
    )


def test_a_torchvision_model_exports_and_matches_pytorch(tmp_path, tiny_data):
    torch.manual_seed(0)
    model = build_model(
        "torchvision:mobilenet_v3_small", kwargs={"num_classes": 10}, input_shape=(1, 28, 28)
    ).eval()
    path = tmp_path / "m.onnx"
    export_onnx(
        model,
        (1, 28, 28),
        path,
        18,
        artifact_metadata(tiny_data.preprocessing, list(tiny_data.classes), "m", "dense"),
    )
    x, _ = tiny_data.tensors("test", limit=3)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_logits(path, x), expected, rtol=0, atol=TOLERANCE)


def test_compress_models_lists_the_builtins_and_the_torchvision_family():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert {"resnet20", "mlp", "logreg", "simplenet", "torchvision:<name>"} <= set(names)


def test_bad_model_arguments_are_one_line_errors():
    with pytest.raises(CompressError, match="shortcut must be"):
        build_model("resnet20", kwargs={"num_classes": 3, "shortcut": "C"}, input_shape=RGB)
    with pytest.raises(CompressError, match="needs images"):
        build_model("resnet20", kwargs={"num_classes": 3}, input_shape=TABLE)
    with pytest.raises(CompressError, match="hidden must be"):
        build_model("mlp", kwargs={"num_classes": 3, "hidden": [0]}, input_shape=TABLE)


SEQUENCE = (64, 3)  # [T, F]: 64 steps of 3 signals


def test_cnn1d_convolves_over_time_with_the_signals_as_channels():
    model = build_model("cnn1d", kwargs={"num_classes": 6}, input_shape=(128, 3))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (16, 32)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == len(convs)
    assert 2_000 < sum(p.numel() for p in model.parameters()) < 5_000  # a few thousand
    assert _run(model, (128, 3)).shape == (2, 6)
    wide = build_model(
        "cnn1d", kwargs={"num_classes": 2, "channels": [4, 8, 12]}, input_shape=SEQUENCE
    )
    assert [m.out_channels for m in wide.modules() if isinstance(m, nn.Conv1d)] == [4, 8, 12]
    assert _run(wide, SEQUENCE).shape == (2, 2)
    with pytest.raises(CompressError, match=r"cnn1d needs sequences \(T, F\), got input shape"):
        build_model("cnn1d", kwargs={"num_classes": 3}, input_shape=RGB)
    with pytest.raises(CompressError, match="channels must be"):
        build_model("cnn1d", kwargs={"num_classes": 3, "channels": [0]}, input_shape=SEQUENCE)


@torch.no_grad()
def test_cnn1d_channels_nobody_reads_are_removed_exactly():
    from compress.pruning.shrink import shrink, units

    torch.manual_seed(0)
    model = build_model("cnn1d", kwargs={"num_classes": 4}, input_shape=SEQUENCE).eval()
    model.features[3].weight[:, [2, 5, 9]] = 0  # no reader: the first block's channels go
    model.classifier.weight[:, [1, 30]] = 0  # the same for the second block's
    x = torch.randn(8, *SEQUENCE)
    expected = model(x)
    shrink(model, SEQUENCE)
    assert units(model) == {"features.0": 13, "features.3": 30, "classifier": 4}
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
