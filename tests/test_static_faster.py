"""[quantize] static_layers = "faster": the static variants quantize only the layers whose
int8 kernel was timed faster than float here (compress.variants.layer_timing); the others
stay float, and the file and the quantize stage's JSON carry the table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError
from torch import nn

from compress.config import QuantizeConfig, ignored_by, parse_pipeline
from compress.encode.onnx_tools import get_metadata
from compress.pipeline import _quantize_settings
from compress.stages.export import export_onnx
from compress.stages.quantize import _layer_timing, write_variant
from compress.variants import layer_timing, static

FASTER = QuantizeConfig(static_layers="faster")
DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A small CNN with BatchNorm, exported: Conv, Conv, MatMul + Add, MatMul + Add."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).eval()
    path = tmp_path_factory.mktemp("cnn") / "pruned.onnx"
    export_onnx(model, (1, 12, 12), path, opset=17, metadata={"labels": "[]"})
    return path


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).standard_normal((32, 1, 12, 12)).astype(np.float32)


def layers(path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type in layer_timing.OP_TYPES]


def dequantized_weight(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether node `node_name` reads its weight (input 1) through a DequantizeLinear."""
    node = next(n for n in model.graph.node if n.name == node_name)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    return producers.get(node.input[1]) == "DequantizeLinear"


def known_table(names, faster):
    """time_layers stand-in: every layer timed, those in `faster` clearly faster."""

    def table(model, quantize, threads=1, exclude=(), seed=0):
        return [
            {
                "node": name,
                "layer": name,
                "op": "Conv",
                "float_ms": 1.0,
                "int8_ms": 0.5 if name in faster else 2.0,
                "ratio": 0.5 if name in faster else 2.0,
                "ratio_low": 0.4 if name in faster else 1.9,
                "ratio_high": 0.6 if name in faster else 2.1,
                "quantized": name in faster,
            }
            for name in names
        ]

    return table


def whole_files(faster=(0.8, 0.7, 0.9), all_=(0.8, 0.7, 0.9), all_vs_faster=(1.0, 0.9, 1.1)):
    """time_models stand-in: the whole files' ratios to float (and all's to faster's)."""

    def check(models, x, threads=1):
        assert len(models) == 3  # float, int8 on the faster layers, int8 on all
        ratios = {"faster": faster, "all": all_}
        return {
            "float_ms": 1.0,
            **{
                k: dict(zip(("ratio", "ratio_low", "ratio_high"), v, strict=True), ms=v[0])
                for k, v in ratios.items()
            },
            "all_vs_faster": list(all_vs_faster),
        }

    return check


@pytest.mark.parametrize("variant", ["static", "static-int4"])
def test_exactly_the_slower_layers_stay_float(cnn, calibration, tmp_path, monkeypatch, variant):
    names = [n.name for n in layers(cnn)]
    faster = {names[1], names[2]}  # the second conv and the first linear
    monkeypatch.setattr(static, "time_layers", known_table(names, faster))
    monkeypatch.setattr(static, "time_models", whole_files())
    target = tmp_path / "pruned-int8-static.onnx"
    write_variant(cnn, target, variant, FASTER, calibration)
    model = onnx.load(str(target))
    onnx.checker.check_model(model, full_check=True)
    assert {n for n in names if dequantized_weight(model, n)} == faster
    rows = json.loads(get_metadata(model)["int8_layers"])
    assert [r["node"] for r in rows] == names
    check = json.loads(get_metadata(model)["int8_check"])
    assert check["kept"] == "faster"
    # what the stage's JSON records
    assert _layer_timing(target) == {"int8_layers": rows, "int8_check": check}
    # the last Linear stays float with its bias: the logits come out of a float Add
    last = model.graph.node[-1]
    assert last.op_type == "Add" and last.output[0] == "logits"


def test_with_no_faster_layer_the_file_is_the_float_graph(
    cnn, calibration, tmp_path, monkeypatch, caplog
):
    names = [n.name for n in layers(cnn)]
    monkeypatch.setattr(static, "time_layers", known_table(names, set()))
    monkeypatch.setattr(static, "time_models", whole_files(faster=(1.0, 0.95, 1.05)))
    target = tmp_path / "pruned-int8-static.onnx"
    with caplog.at_level(logging.INFO, logger="compress.variants.static"):
        write_variant(cnn, target, "static", FASTER, calibration)
    assert f"int8 on none of {len(names)} layers" in caplog.text
    model = onnx.load(str(target))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"}
    x = calibration[:4]
    float_out = ort.InferenceSession(str(cnn)).run(None, {"input": x})[0]
    out = ort.InferenceSession(str(target)).run(None, {"input": x})[0]
    np.testing.assert_allclose(out, float_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("check", "kept"),
    [
        ({"faster": (0.8, 0.7, 0.9), "all_vs_faster": (0.97, 0.9, 1.02)}, "faster"),
        ({"all": (0.6, 0.5, 0.7), "all_vs_faster": (0.8, 0.75, 0.85)}, "all"),
        ({"faster": (1.3, 1.2, 1.4), "all_vs_faster": (1.1, 1.05, 1.2)}, "none"),
    ],
    ids=["the-faster-layers", "all-when-clearly-faster-than-that", "none-when-slower-than-float"],
)
def test_the_whole_file_check_keeps(check, kept, cnn, calibration, tmp_path, monkeypatch):
    names = [n.name for n in layers(cnn)]
    monkeypatch.setattr(static, "time_layers", known_table(names, {names[0]}))
    monkeypatch.setattr(
        static,
        "time_models",
        whole_files(**{"all_" if k == "all" else k: v for k, v in check.items()}),
    )
    target = tmp_path / "pruned-int8-static.onnx"
    write_variant(cnn, target, "static", FASTER, calibration)
    model = onnx.load(str(target))
    int8 = {n for n in names if dequantized_weight(model, n)}
    assert int8 == {"faster": {names[0]}, "all": set(names), "none": set()}[kept]
    assert json.loads(get_metadata(model)["int8_check"])["kept"] == kept
    rows = json.loads(get_metadata(model)["int8_layers"])
    assert {r["node"] for r in rows if r["quantized"]} == int8  # the table says what the file has


def test_the_log_names_the_faster_and_the_float_layers():
    rows = [
        {"node": f"node_{n}", "layer": n, "quantized": q}
        for n, q in [("conv1", False), ("conv2", True), ("fc1", True), ("conv3", False)]
    ]
    assert layer_timing.layer_line(rows) == (
        "int8 on 2 of 4 layers: conv2, fc1 faster; conv1, conv3 stay float"
    )


def gemm_model() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> Gemm -> MatMul, weights as initializers, batch free."""
    rng = np.random.default_rng(1)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["g"], name="gemm", transB=1),
        helper.make_node("MatMul", ["g", "w3"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [
            init("w1", 4, 2, 3, 3),
            init("b1", 4),
            init("w2", 8, 4 * 6 * 6),
            init("b2", 8),
            init("w3", 8, 5),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_real_timing_gives_one_sane_row_per_layer():
    model = gemm_model()
    quantize = static.Static()._quantize_layer(QuantizeConfig())
    rows = layer_timing.time_layers(model, quantize, threads=1)
    assert [(r["node"], r["layer"], r["op"]) for r in rows] == [
        ("conv", "w1", "Conv"),
        ("gemm", "w2", "Gemm"),
        ("matmul", "w3", "MatMul"),
    ]
    for row in rows:
        assert 0 < row["float_ms"] < 50 and 0 < row["int8_ms"] < 50
        assert 0 < row["ratio_low"] <= row["ratio"] <= row["ratio_high"]
        assert row["quantized"] == (row["ratio_high"] < 1)
    # a front-end node is neither timed nor listed
    assert [r["node"] for r in layer_timing.time_layers(model, quantize, exclude=["conv"])] == [
        "gemm",
        "matmul",
    ]


def test_a_layer_it_cannot_time_alone_stays_float_with_a_note():
    model = gemm_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"  # unknown height
    rows = layer_timing.time_layers(model, lambda single, samples: single)
    assert rows[0]["node"] == "conv" and not rows[0]["quantized"]
    assert rows[0]["note"] == "input shape unknown"


def test_packed_int4_packs_a_static_int4_of_every_layer(cnn, calibration, tmp_path, monkeypatch):
    def untimed(*args, **kwargs):
        raise AssertionError("what packed-int4 is made from is not timed")

    monkeypatch.setattr(static, "time_layers", untimed)
    target = tmp_path / "pruned-int4-packed.onnx"
    write_variant(cnn, target, "packed-int4", FASTER, calibration)
    inits = onnx.load(str(target)).graph.initializer
    # every layer's weight is stored as codes: no float weight is left
    assert sum(i.name.endswith(".q") for i in inits) >= len(layers(cnn))
    floats = [i for i in inits if i.data_type == TensorProto.FLOAT and len(i.dims) >= 2]
    assert all(i.name.endswith(".scale") for i in floats)


def test_static_layers_validates_and_is_documented_beside_calibration_method():
    assert QuantizeConfig().static_layers == "all"
    with pytest.raises(ValidationError, match="'all' or 'faster'"):
        QuantizeConfig(static_layers="fast")
    reference = (DOCS / "reference.md").read_text()
    at = reference.index("calibration_method = ")
    assert "static_layers = " in reference[at : at + 300]
    assert "### int8 only where it is faster" in (DOCS / "methods.md").read_text()


def test_static_layers_is_ignored_without_a_static_variant():
    config = parse_pipeline({"quantize": {"variants": ["dynamic", "packed-int4"]}}, name="p")
    assert ignored_by(config, "quantize.static_layers") == (
        "quantize.variants has no static or static-int4; static_layers is read by them only"
    )
    config = parse_pipeline({"quantize": {"variants": ["static-int4"]}}, name="p")
    assert ignored_by(config, "quantize.static_layers") is None


def test_the_default_leaves_the_quantize_key_as_it_was_and_faster_adds_the_threads():
    default = parse_pipeline({}, name="p")
    assert _quantize_settings(default) == default.quantize.model_dump(
        mode="json", by_alias=True, exclude={"static_layers"}
    )
    faster = parse_pipeline(
        {"quantize": {"static_layers": "faster"}, "verify": {"threads": 2}}, name="p"
    )
    settings = _quantize_settings(faster)
    assert settings["threads"] == 2 and settings["quantize"]["static_layers"] == "faster"


def test_a_real_whole_file_check_times_float_and_both_int8_files():
    model = gemm_model()
    x = np.random.default_rng(0).standard_normal((8, 2, 6, 6)).astype(np.float32)
    check = layer_timing.time_models([model, model, model], x)
    assert check["float_ms"] > 0
    for name in ("faster", "all"):
        assert check[name]["ms"] > 0
        assert check[name]["ratio_low"] <= check[name]["ratio"] <= check[name]["ratio_high"]
    assert layer_timing.choose(check) in ("faster", "all", "none")
