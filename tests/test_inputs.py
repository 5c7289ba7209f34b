"""Feature selection: which inputs a pruned model still reads, the report's `inputs`, the
heatmap, and `[export] drop_unused_inputs` (a file on the used inputs only)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from compress.encode.inputs import UsedInputs, input_usage, plot_usage, reduced_model, take_used
from compress.encode.onnx_tools import get_metadata
from compress.registry import build_model
from compress.stages.export import export_onnx

NAMES = tuple(f"f{i}" for i in range(6))


def logreg_with_zero_columns(dead: list[int]) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("logreg", kwargs={"num_classes": 3}, input_shape=(6,))
    with torch.no_grad():
        model.net[1].weight[:, dead] = 0
        model.net[1].weight[0, 1] = 0  # a column with one zero is still used
    return model


def test_a_table_feature_is_unused_when_its_whole_column_is_zero():
    usage = input_usage(logreg_with_zero_columns([0, 4]), (6,), NAMES)
    assert usage.summary() == {
        "total": 6,
        "used": 4,
        "names": ["f1", "f2", "f3", "f5"],
        "unit": "features",
        "first_layers": ["net.1"],
    }
    assert usage.sentence() == "uses 4 of 6 features: f1, f2, f3, f5"
    assert usage.indices == [1, 2, 3, 5]


def test_an_mlp_on_flattened_images_is_read_per_pixel():
    torch.manual_seed(0)
    model = build_model("mlp", kwargs={"num_classes": 4, "hidden": [5]}, input_shape=(3, 4, 4))
    with torch.no_grad():
        w = model.net[1].weight.view(5, 3, 4, 4)
        w[:, :, 0, :] = 0  # the top row in every channel: unused pixels
        w[:, 1:, 1, 1] = 0  # pixel (1, 1) only in the red channel: still a used pixel
    usage = input_usage(model, (3, 4, 4))
    assert (usage.unit, usage.total, usage.used) == ("pixels", 16, 12)
    assert usage.mask[0].tolist() == [False] * 4 and bool(usage.mask[1, 1])
    assert len(usage.indices) == 3 * 12 - 2  # elements: (1, 1) in green and blue dropped
    assert usage.names is None


def test_a_conv_first_layer_is_read_per_input_channel_groups_included():
    conv = nn.Conv2d(4, 4, 3, groups=2)  # channels 0-1 feed outputs 0-1, channels 2-3 feed 2-3
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 4, 8, 8))
    with torch.no_grad():
        conv.weight[0:2, 1] = 0  # channel 1 (group 0) unused
        conv.weight[2:4, 0, 0, 0] = 0  # channel 2: one kernel entry zero, still used
    usage = input_usage(model, (4, 8, 8))
    assert (usage.unit, usage.total, usage.used, usage.indices) == ("channels", 4, 3, [0, 2, 3])


@pytest.mark.parametrize(
    ("channels", "sentence"),
    [
        (1, "reads every pixel of its one input channel"),  # not "uses 1 of 1 channels"
        (3, "reads every pixel of all 3 input channels"),
    ],
)
def test_a_convolution_reading_every_channel_says_it_reads_every_pixel(channels, sentence):
    model = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, channels, 8, 8))
    assert input_usage(model, (channels, 8, 8)).sentence() == sentence


def test_no_verdict_when_something_else_reads_the_input_first():
    model = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 2))
    assert input_usage(model, (6,)) is None


@pytest.mark.parametrize(
    "shape, make",
    [
        ((6,), lambda: logreg_with_zero_columns([0, 4])),
        ((3, 4, 4), lambda: _mlp_image()),
        ((4, 6, 6), lambda: _conv_net()),
    ],
)
def test_the_reduced_file_gives_the_same_logits_on_the_used_inputs(tmp_path, shape, make):
    model = make().eval()
    usage = input_usage(model, shape)
    reduced, reduced_shape = reduced_model(model, usage)
    # A Linear on the flattened input is cut to the used columns; a Conv keeps its weights.
    assert isinstance(reduced, UsedInputs) == (usage.axis == "channels")
    path = tmp_path / "reduced.onnx"
    export_onnx(reduced, reduced_shape, path, 18, {"inputs": json.dumps(usage.metadata())})
    x = torch.randn(5, *shape)
    with torch.no_grad():
        expected = model(x).numpy()
    meta = json.loads(get_metadata(onnx.load(str(path)))["inputs"])
    small = take_used(x.numpy(), meta)
    total = shape[0] if usage.axis == "channels" else int(np.prod(shape))
    assert small.shape[1] == len(usage.indices) < total
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": small})[0], expected, rtol=0, atol=1e-5)


def _mlp_image() -> nn.Module:
    torch.manual_seed(1)
    model = build_model("mlp", kwargs={"num_classes": 4, "hidden": [5]}, input_shape=(3, 4, 4))
    with torch.no_grad():
        model.net[1].weight[:, ::3] = 0
    return model


def _conv_net() -> nn.Module:
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 3, 3)
    with torch.no_grad():
        conv.weight[:, 2] = 0
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def test_the_heatmap_is_a_png_for_pixels_only(tmp_path):
    usage = input_usage(_mlp_image(), (3, 4, 4))
    path = plot_usage(usage, tmp_path / "inputs.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_usage(input_usage(_conv_net(), (4, 6, 6)), tmp_path / "c.png") is None


@pytest.mark.slow
def test_a_pipeline_reports_its_used_pixels_and_verifies_the_reduced_file(pipeline_file, tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    pipeline = pipeline_file(
        {
            "export.drop_unused_inputs": True,
            "prune.threshold": 0.05,
            "quantize.variants": ["dynamic"],
        }
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    inputs = report["inputs"]
    assert inputs["unit"] == "pixels" and inputs["total"] == 784 and 0 < inputs["used"] < 784
    assert f"pruned model uses {inputs['used']} of 784 pixels" in result.output
    assert (out / "inputs.png").read_bytes()[:4] == b"\x89PNG"
    rows = {a["name"]: a for a in report["artifacts"]}
    assert rows["pruned-inputs"]["status"] == "ok"
    assert rows["pruned-inputs"]["accuracy"] == rows["pruned"]["accuracy"]
    assert rows["pruned-inputs"]["agreement"] == 1.0
    model = onnx.load(str(out / "pruned-inputs.onnx"))
    meta = json.loads(get_metadata(model)["inputs"])
    assert len(meta["indices"]) == model.graph.input[0].type.tensor_type.shape.dim[1].dim_value


def test_a_model_that_needs_its_full_input_shape_gets_the_zero_filled_reduced_model():
    class FixedView(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(x.view(-1, 6))

    model = FixedView()
    with torch.no_grad():
        model.fc.weight[:, 0] = 0
    usage = input_usage(model, (6,))
    reduced, shape = reduced_model(model, usage)
    assert isinstance(reduced, UsedInputs) and shape == (5,)
    x = torch.randn(4, 6)
    torch.testing.assert_close(reduced(x[:, 1:]), model(x))


def test_quantizing_the_reduced_file_needs_it_exported():
    from compress.config import parse_pipeline
    from compress.errors import ConfigError

    with pytest.raises(ConfigError, match="needs \\[export\\] drop_unused_inputs = true"):
        parse_pipeline({"quantize": {"source": "pruned-inputs"}}, name="x")
    parsed = parse_pipeline(
        {"quantize": {"source": "pruned-inputs"}, "export": {"drop_unused_inputs": True}}, name="x"
    )
    assert parsed.quantize.source == "pruned-inputs"


@pytest.mark.slow
def test_int8_files_of_the_reduced_model_take_only_the_used_pixels(pipeline_file, tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    pipeline = pipeline_file(
        {
            "export.drop_unused_inputs": True,
            "prune.threshold": 0.05,
            "quantize.source": "pruned-inputs",
            "quantize.variants": ["dynamic", "static"],
        }
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    used = report["inputs"]["used"]
    assert 0 < used < 784
    rows = {a["name"]: a for a in report["artifacts"]}
    for name in ("pruned-inputs-int8-dynamic", "pruned-inputs-int8-static"):
        assert rows[name]["status"] == "ok"
        assert rows[name]["agreement"] > 0.9  # against the pruned PyTorch model on all pixels
        model = onnx.load(str(out / f"{name}.onnx"))
        assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == used
        assert len(json.loads(get_metadata(model)["inputs"])["indices"]) == used
