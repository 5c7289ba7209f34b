"""Compatibility: each file declares the lowest IR version its opsets and types allow, and
the oldest onnxruntime that loads it follows from onnxruntime's documented table."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from compress.config import QuantizeConfig
from compress.encode.compat import (
    ORT_RELEASES,
    lowest_ir_version,
    min_onnxruntime,
    opsets,
    set_ir_version,
)
from compress.encode.onnx_tools import (
    artifact_metadata,
    checksum_matches,
    get_metadata,
    sealed_bytes,
)
from compress.stages.export import export_onnx
from compress.stages.quantize import write_variant


def release(version: str) -> tuple[str, int, int, int]:
    return next(r for r in ORT_RELEASES if r[0] == version)


def assert_loadable_by(model: onnx.ModelProto, version: str) -> None:
    """The file's declared versions are within what `version` implements (per the table)."""
    _, max_opset, max_ml, max_ir = release(version)
    assert model.ir_version <= max_ir
    versions = opsets(model)
    assert versions.get("ai.onnx", 0) <= max_opset
    assert versions.get("ai.onnx.ml", 0) <= max_ml


def tiny_model(opset: int, ir: int, data_type=TensorProto.FLOAT, domain_ops=()) -> onnx.ModelProto:
    weight = helper.make_tensor("w", data_type, [2, 2], [1, 0, 0, 1])
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    nodes += [
        helper.make_node(op, ["x"], [f"z{i}"], domain="com.microsoft")
        for i, op in enumerate(domain_ops)
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [weight],
    )
    imports = [helper.make_opsetid("", opset)] + (
        [helper.make_opsetid("com.microsoft", 1)] if domain_ops else []
    )
    return helper.make_model(graph, opset_imports=imports, ir_version=ir)


def test_the_table_is_ordered_and_monotonic():
    keys = [tuple(int(p) for p in r[0].split(".")) for r in ORT_RELEASES]
    assert keys == sorted(keys)
    for column in (1, 2, 3):
        values = [r[column] for r in ORT_RELEASES]
        assert values == sorted(values)
    # the documented facts the issue hinges on: 1.17 stops at IR 9, 1.18 loads IR 10
    assert release("1.17")[3] == 9 and release("1.18")[3] == 10


@pytest.mark.parametrize(
    ("opset", "ir", "expected"),
    [
        (17, 8, "1.12"),
        (18, 8, "1.14"),
        (19, 9, "1.15"),
        (17, 10, "1.18"),
        (21, 10, "1.18"),
        (13, 7, "1.6"),
    ],
)
def test_the_oldest_runtime_follows_the_table(opset, ir, expected):
    assert min_onnxruntime(tiny_model(opset, ir), verified_with="1.32.0") == expected


def test_int4_weights_need_a_newer_runtime_than_int8():
    int8 = tiny_model(17, 8, TensorProto.INT8)
    int4 = tiny_model(17, 8, TensorProto.INT4)
    assert min_onnxruntime(int8, "1.32.0") == "1.12"
    assert lowest_ir_version(int4) == 10  # INT4 is an IR 10 type, whatever the opset
    set_ir_version(int4)
    assert int4.ir_version == 10 and min_onnxruntime(int4, "1.32.0") == "1.19"


def test_contrib_operators_have_their_own_minimum():
    assert min_onnxruntime(tiny_model(17, 8, domain_ops=["DequantizeLinear"]), "1.32.0") == "1.12"
    # an operator the table does not know needs the release that verified the file
    assert min_onnxruntime(tiny_model(17, 8, domain_ops=["SomeNewFusedOp"]), "1.32.1") == "1.32"


def test_int8_convinteger_needs_the_release_with_its_kernel():
    model = tiny_model(17, 8, TensorProto.INT8)
    model.graph.node.append(helper.make_node("ConvInteger", ["x", "w"], ["c"]))
    assert min_onnxruntime(model, "1.32.0") == "1.24"
    model.graph.initializer[0].data_type = TensorProto.UINT8  # uint8 weights: any release
    assert min_onnxruntime(model, "1.32.0") == "1.12"


def test_an_ir_version_asked_for_below_what_the_file_needs_is_raised():
    model = tiny_model(21, 11)
    assert set_ir_version(model, 7) == 10
    assert set_ir_version(model, 11) == 11


@pytest.fixture(scope="module")
def exports(tmp_path_factory, pruned_export, tiny_data):
    """The tiny pruned model exported at the default opset, and its quantized variants."""
    folder = tmp_path_factory.mktemp("compat")
    metadata = artifact_metadata(
        tiny_data.preprocessing,
        list(tiny_data.classes),
        "simplenet",
        "pruned",
        dataset="mnist",
        input_shape=tiny_data.input_shape,
    )
    float_path = folder / "pruned.onnx"
    export_onnx(pruned_export.model, tiny_data.input_shape, float_path, opset=17, metadata=metadata)
    calibration = tiny_data.tensors("train", limit=64)[0].numpy()
    paths = {"pruned": float_path}
    for variant in ("dynamic", "static", "static-int4"):
        paths[variant] = folder / f"pruned-{variant}.onnx"
        write_variant(
            float_path, paths[variant], variant, QuantizeConfig(calibration_samples=64), calibration
        )
    return paths


@pytest.mark.parametrize(
    ("variant", "oldest"),
    [
        ("pruned", "1.12"),
        ("dynamic", "1.12"),
        ("static", "1.12"),
        ("static-int4", "1.19"),
    ],
)
def test_every_artifact_declares_versions_its_oldest_runtime_loads_and_loads(
    exports, tiny_data, variant, oldest
):
    model = onnx.load(str(exports[variant]))
    assert model.ir_version == lowest_ir_version(model)  # nothing newer than needed
    assert model.ir_version < 10 or variant == "static-int4"  # onnxruntime <= 1.17 loads the rest
    assert min_onnxruntime(model) == oldest
    assert_loadable_by(model, oldest)
    session = onnxruntime.InferenceSession(
        str(exports[variant]), providers=["CPUExecutionProvider"]
    )
    x = tiny_data.tensors("test", limit=4)[0].numpy()
    assert session.run(None, {"input": x})[0].shape == (4, 10)


def test_metadata_tells_a_deployer_the_layout_and_the_output(exports):
    metadata = get_metadata(onnx.load(str(exports["pruned"])))
    assert metadata["layout"] == "NCHW" and metadata["output"] == "logits"
    assert metadata["dataset"] == "mnist" and metadata["input_shape"] == "[null, 1, 28, 28]"


def test_a_file_holds_its_own_checksum(exports):
    model = onnx.load(str(exports["static"]))
    data = sealed_bytes(model)
    digest = get_metadata(onnx.load_from_string(data))["sha256"]
    # what a user can check without onnx: the digest's 64 characters written as zeros
    assert hashlib.sha256(data.replace(digest.encode(), b"0" * 64)).hexdigest() == digest
    assert checksum_matches(data)
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 1
    assert not checksum_matches(bytes(damaged))
    np.testing.assert_array_equal(  # sealing changes no weight
        onnx.numpy_helper.to_array(onnx.load_from_string(data).graph.initializer[0]),
        onnx.numpy_helper.to_array(model.graph.initializer[0]),
    )
