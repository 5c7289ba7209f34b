"""Packed int4 weights: positions and codes of the non-zeros, rebuilt at session load."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from compress.config import PackedConfig, QuantizeConfig
from compress.encode.cost import session_weight_bytes
from compress.encode.onnx_tools import get_metadata, parameter_counts, write_packages
from compress.encode.packed import MAX_STEP, PackOptions, decode_stream, delta_stream, pack_model
from compress.errors import CompressError
from compress.stages.export import export_onnx
from compress.stages.quantize import write_variant


@pytest.fixture(scope="module")
def int4(pruned_export, tiny_data, tmp_path_factory):
    """The static-int4 file of the pruned fixture model, and its test inputs."""
    folder = tmp_path_factory.mktemp("packed")
    calibration = tiny_data.tensors("train", limit=128)[0].numpy()
    path = folder / "pruned-int4-static.onnx"
    write_variant(pruned_export.path, path, "static-int4", QuantizeConfig(), calibration)
    return path, tiny_data.tensors("test")[0].numpy(), onnx.load(str(pruned_export.path))


def session(path_or_model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    data = (
        path_or_model.SerializeToString()
        if isinstance(path_or_model, onnx.ModelProto)
        else str(path_or_model)
    )
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def logits(path_or_model, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> np.ndarray:
    return session(path_or_model, level).run(None, {"input": x})[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 700), st.integers(-8, 7)), min_size=0, max_size=30),
    st.integers(1, 2000),
)
def test_the_delta_stream_gives_back_every_code(runs, tail):
    flat = np.concatenate(
        [np.r_[np.zeros(gap, np.int8), np.int8(code)] for gap, code in runs]
        or [np.zeros(0, np.int8)]
    )
    flat = np.r_[flat, np.zeros(tail, np.int8)]
    steps, codes = delta_stream(flat)
    assert steps.dtype == np.uint8 and len(steps) == len(codes) >= 1
    np.testing.assert_array_equal(decode_stream(steps, codes, flat.size), flat)
    assert np.count_nonzero(codes) == np.count_nonzero(flat)
    assert np.all(steps[1:] >= 1)  # strictly rising positions: ScatterND writes each once


def test_a_long_gap_is_split_by_zero_fillers():
    flat = np.zeros(1000, np.int8)
    flat[[0, 600]] = [3, -2]
    steps, codes = delta_stream(flat)
    assert steps.tolist() == [0, MAX_STEP, MAX_STEP, 600 - 2 * MAX_STEP]
    assert codes.tolist() == [3, 0, 0, -2]


def test_with_int8_activations_the_logits_are_bit_identical_to_static_int4(int4):
    path, x, source = int4
    packed = pack_model(onnx.load(str(path)), options=PackOptions(activations="int8"))
    # The QDQ file as written: an optimized session of it may fuse bias adds into QLinearAdd.
    as_written = logits(path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(logits(packed, x), as_written)
    np.testing.assert_array_equal(
        logits(packed, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), as_written
    )


def dequantized_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of each MatMul + Add of the QDQ file, as DequantizeLinear computes them."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    layers = []
    for name in sorted(
        {i.removesuffix(".weight_quantized") for i in inits if i.endswith(".weight_quantized")}
    ):
        weight = (
            inits[f"{name}.weight_quantized"].astype(np.float32) * inits[f"{name}.weight_scale"]
        )
        q, zero = inits[f"{name}.bias_quantized"], inits[f"{name}.bias_zero_point"]
        bias = (q.astype(np.float32) - zero.astype(np.float32)) * inits[f"{name}.bias_scale"]
        layers.append((weight, bias))
    return layers


def test_with_float_activations_the_weights_are_exactly_the_int4_values(int4):
    path, x, source = int4
    packed = pack_model(onnx.load(str(path)), source)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in packed.graph.node)
    h = x.reshape(len(x), -1)
    layers = dequantized_weights(path)
    for i, (weight, bias) in enumerate(layers):
        h = h @ weight + bias
        h = np.maximum(h, 0) if i < len(layers) - 1 else h
    np.testing.assert_allclose(logits(packed, x), h, rtol=0, atol=1e-4)


def test_without_graph_optimizations_the_rebuild_runs_per_call_with_the_same_result(int4):
    path, x, source = int4
    packed = pack_model(onnx.load(str(path)), source)
    off = logits(packed, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_allclose(
        off, logits(packed, x), rtol=0, atol=1e-4
    )  # fused kernels sum in another order


def test_the_packed_file_is_smaller_and_a_session_holds_dense_float_weights(
    int4, pruned_export, tmp_path
):
    path, _, _ = int4
    target = tmp_path / "pruned-int4-packed.onnx"
    calibration = np.zeros((1, 1, 28, 28), np.float32)
    write_variant(
        pruned_export.path,
        target,
        "packed-int4",
        QuantizeConfig(),
        calibration,
        {"static-int4": path},
    )
    packed_sizes = write_packages(target, tmp_path / "deploy")
    qdq_sizes = write_packages(path, tmp_path / "deploy")
    assert packed_sizes["bytes"] < qdq_sizes["bytes"]
    assert packed_sizes["deploy_bytes"] < qdq_sizes["deploy_bytes"]
    assert "every call" in get_metadata(onnx.load(str(target)))["encoding"]
    weights = sum(w.size + b.size for w, b in dequantized_weights(path))
    assert 4 * weights <= session_weight_bytes(target) <= 4 * weights + 256
    # Parameters are counted from the codes and the weight's shape, as for the QDQ file.
    assert parameter_counts(onnx.load(str(target))) == parameter_counts(onnx.load(str(path)))


def test_float16_scales_are_smaller_and_close(int4):
    path, x, source = int4
    model = onnx.load(str(path))
    full, half = pack_model(model, source), pack_model(model, source, PackOptions(scales="float16"))

    def scale_bytes(packed):
        return sum(len(i.raw_data) for i in packed.graph.initializer if ".scale" in i.name)

    assert scale_bytes(half) * 2 == scale_bytes(full) > 0
    np.testing.assert_allclose(logits(half, x), logits(full, x), rtol=0, atol=2e-2)


def test_the_packed_variant_follows_its_config(pruned_export, tiny_data):
    calibration = tiny_data.tensors("train", limit=64)[0].numpy()
    config = QuantizeConfig(packed=PackedConfig(activations="int8"))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "p.onnx"
        write_variant(pruned_export.path, target, "packed-int4", config, calibration)
        model = onnx.load(str(target))
    initializers = {i.name for i in model.graph.initializer}
    dequantized = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert (
        dequantized and not set(dequantized) & initializers
    )  # activations only: weights are rebuilt


def test_the_written_file_has_short_names_and_the_same_logits(int4, pruned_export, tmp_path):
    path, x, source = int4
    target = tmp_path / "pruned-int4-packed.onnx"
    write_variant(
        pruned_export.path, target, "packed-int4", QuantizeConfig(), x[:8], {"static-int4": path}
    )
    written, named = onnx.load(str(target)), pack_model(onnx.load(str(path)), source)
    assert written.ByteSize() < named.ByteSize() - 200
    assert [i.name for i in written.graph.input] == ["input"] and [
        o.name for o in written.graph.output
    ] == ["logits"]
    assert not any(n.name for n in written.graph.node)
    assert max(len(i.name) for i in written.graph.initializer) <= len("ab.scale16")
    np.testing.assert_array_equal(logits(written, x), logits(named, x))
    # The parts of each weight keep their suffixes, so the counts behind `sparsity` are the same.
    for weights_only in (False, True):
        assert parameter_counts(written, weights_only) == parameter_counts(named, weights_only)


def test_a_float_model_has_nothing_to_pack(pruned_export):
    model = onnx.load(str(pruned_export.path))
    with pytest.raises(CompressError, match="no quantized weights"):
        pack_model(model, model)


def test_float_activations_need_the_float_model(int4):
    path, _, _ = int4
    with pytest.raises(CompressError, match="need the float model"):
        pack_model(onnx.load(str(path)))


def sparse_model(kind: str) -> torch.nn.Module:
    """A small MLP or CNN with 95% of each weight zeroed, as pruning leaves it."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 5),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 5),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(16 * 8 * 8, 10),
        )
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.mul_((torch.rand_like(parameter) > 0.95).float())
    return model.eval()


def dequantized_float_model(qdq: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """`source` with each initializer set to what the QDQ model's DequantizeLinear makes of it."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    model = onnx.ModelProto.FromString(source.SerializeToString())
    for node in qdq.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = inits[node.input[0]].astype(np.float32)
        scale, zero = inits[node.input[1]], inits[node.input[2]].astype(np.float32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        value = (q - zero) * scale
        target = next(
            i for i in model.graph.initializer if i.name == node.input[0].removesuffix("_quantized")
        )
        target.CopyFrom(numpy_helper.from_array(value.astype(np.float32), target.name))
    return model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_sparse_weights_are_rebuilt_exactly(kind, tmp_path):
    float_path, qdq_path = tmp_path / "pruned.onnx", tmp_path / "int4.onnx"
    export_onnx(sparse_model(kind), (1, 28, 28), float_path, 18, {"preprocessing": "{}"})
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    write_variant(float_path, qdq_path, "static-int4", QuantizeConfig(), x)
    qdq, source = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    packed = pack_model(qdq, source)
    ops = [n.op_type for n in packed.graph.node]
    assert ops.count("ScatterND") == (2 if kind == "mlp" else 3)  # every weight sparse-coded
    reference = logits(dequantized_float_model(qdq, source), x)
    np.testing.assert_allclose(logits(packed, x), reference, rtol=0, atol=1e-5)
    # Four bytes per weight in the float file; well under one in the packed one.
    weights = sum(int(np.prod(i.dims)) for i in source.graph.initializer if len(i.dims) > 1)
    assert packed.ByteSize() < 0.5 * weights
    # The counts behind `sparsity` see the packed weights as the tensors they rebuild.
    for weights_only in (False, True):
        assert parameter_counts(packed, weights_only) == parameter_counts(qdq, weights_only)


def test_linear_layers_can_run_as_matmulnbits_on_the_same_codes(tmp_path):
    float_path, qdq_path = tmp_path / "pruned.onnx", tmp_path / "int4.onnx"
    export_onnx(sparse_model("mlp"), (1, 28, 28), float_path, 18, {"preprocessing": "{}"})
    x = np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32)
    write_variant(float_path, qdq_path, "static-int4", QuantizeConfig(), x)
    qdq, source = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    nbits = pack_model(qdq, source, PackOptions(linear="matmulnbits"))
    onnx.checker.check_model(nbits, full_check=True)
    ops = [n.op_type for n in nbits.graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    # accuracy_level 4 quantizes activations to int8 inside the kernel: close, not identical.
    reference = logits(pack_model(qdq, source), x)
    assert np.abs(logits(nbits, x) - reference).max() < 0.05 * np.abs(reference).max()
    assert (logits(nbits, x).argmax(1) == reference.argmax(1)).mean() >= 0.9
    with pytest.raises(CompressError, match="MatMulNBits takes float activations"):
        pack_model(qdq, source, PackOptions(activations="int8", linear="matmulnbits"))
