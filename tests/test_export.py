"""ONNX export: onnxruntime matches PyTorch, one self-contained file, a dynamic batch axis,
metadata that makes the file usable alone, and the pruning zeros kept as +0.0."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

from compress.encode.onnx_tools import (
    artifact_metadata,
    gemm_to_matmul,
    get_metadata,
    parameter_counts,
    positive_zero_initializers,
)
from compress.pruning import prunable_layers
from compress.registry import build_model, list_models
from compress.stages.export import export_onnx
from tests.test_registry import sample_shape

TOLERANCE = 1e-4  # largest logit difference allowed between PyTorch and onnxruntime


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path, x: torch.Tensor) -> np.ndarray:
    return session(path).run(None, {"input": x.numpy()})[0]


def initializers(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_matches_pytorch_at_any_batch_size(pruned_export, tiny_data, batch):
    x, _ = tiny_data.tensors("test", limit=batch)
    with torch.no_grad():
        expected = pruned_export.model(x).numpy()
    logits = onnx_logits(pruned_export.path, x)
    assert logits.shape == (batch, 10)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)


def test_onnxruntime_matches_pytorch_on_the_whole_test_split(pruned_export, tiny_data):
    x, _ = tiny_data.tensors("test")
    with torch.no_grad():
        expected = pruned_export.model(x).numpy()
    logits = onnx_logits(pruned_export.path, x)
    assert np.abs(logits - expected).max() <= TOLERANCE
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_the_batch_axis_is_dynamic_and_the_rest_fixed(pruned_export):
    graph = onnx.load(str(pruned_export.path)).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert out.type.tensor_type.shape.dim[0].dim_param == dims[0].dim_param


def test_the_exported_file_is_self_contained_and_passes_the_full_checker(pruned_export):
    assert sorted(p.name for p in pruned_export.folder.iterdir()) == [
        "pruned.onnx"
    ]  # no .data file
    model = onnx.load(str(pruned_export.path), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert not any(i.external_data for i in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)


def test_metadata_carries_preprocessing_and_labels(pruned_export, tiny_data):
    metadata = get_metadata(onnx.load(str(pruned_export.path)))
    assert json.loads(metadata["preprocessing"]) == {
        "scale": 1 / 255,
        "mean": [0.1307],
        "std": [0.3081],
        "size": [28, 28],
        "channels": 1,
        "layout": "NCHW",
    }
    assert json.loads(metadata["preprocessing"]) == tiny_data.preprocessing
    assert json.loads(metadata["labels"]) == [str(i) for i in range(10)]
    assert metadata["model"] == "simplenet" and metadata["variant"] == "pruned"
    assert metadata["producer"].startswith("compress ")


def test_preprocessing_metadata_reproduces_the_training_inputs(pruned_export, tiny_data):
    pre = json.loads(get_metadata(onnx.load(str(pruned_export.path)))["preprocessing"])
    pixels = tiny_data.images["test"][:50].numpy()
    mean = np.float32(pre["mean"]).reshape(1, -1, 1, 1)
    std = np.float32(pre["std"]).reshape(1, -1, 1, 1)
    x = ((pixels.astype(np.float32) * np.float32(pre["scale"]) - mean) / std).astype(np.float32)
    np.testing.assert_allclose(x, tiny_data.tensors("test", limit=50)[0].numpy(), rtol=0, atol=1e-5)


def test_linear_layers_are_exported_as_matmul_with_in_out_weights(pruned_export):
    model = onnx.load(str(pruned_export.path))
    ops = [n.op_type for n in model.graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") == 2
    weights = initializers(pruned_export.path)
    assert weights["net.1.weight"].shape == (784, 16)
    np.testing.assert_array_equal(
        weights["net.1.weight"], pruned_export.model.net[1].weight.detach().numpy().T
    )


def test_pruned_weights_stay_zero_through_export(pruned_export):
    weights = initializers(pruned_export.path)
    for name, keep in pruned_export.masks.items():
        exported = weights[f"{name}.weight"].T  # stored [in, out]
        assert (exported[~keep.numpy()] == 0).all()
        assert not np.signbit(exported[exported == 0]).any()
    pruned = sum(int((~keep).sum()) for keep in pruned_export.masks.values())
    assert pruned > 1000  # the fixture really pruned something
    torch_params = sum(p.numel() for p in pruned_export.model.parameters())
    torch_nonzero = sum(int((p != 0).sum()) for p in pruned_export.model.parameters())
    params, nonzero = parameter_counts(onnx.load(str(pruned_export.path)))
    assert (params, nonzero) == (torch_params, torch_nonzero)


def test_negative_zeros_are_exported_as_positive_zeros(tmp_path):
    torch.manual_seed(0)
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    with torch.no_grad():
        model.net[1].weight[:, :100] = -0.0
        model.net[3].bias[:3] = -0.0
    assert torch.signbit(model.net[1].weight[:, :100]).all()
    path = tmp_path / "m.onnx"
    export_onnx(model, (1, 28, 28), path, opset=18, metadata={})
    weights = initializers(path)
    for array in weights.values():
        if array.dtype.kind == "f":
            assert not np.signbit(array[array == 0]).any()
    assert (weights["net.1.weight"][:100] == 0).all()


def test_positive_zero_initializers_changes_nothing_but_the_sign_of_zero():
    values = np.array([-0.0, 0.0, -1.5, 2.0, -0.0], dtype=np.float32)
    model = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(values, "w")])
    )
    positive_zero_initializers(model)
    fixed = numpy_helper.to_array(model.graph.initializer[0])
    assert fixed.tolist() == [0.0, 0.0, -1.5, 2.0, 0.0]
    assert not np.signbit(fixed[fixed == 0]).any()


def test_gemm_to_matmul_keeps_the_arithmetic():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 5])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (5, 3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w.T + b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n != "simplenet"])
def test_every_registered_model_exports_and_matches_pytorch(name, tmp_path, tiny_data):
    torch.manual_seed(0)
    shape = sample_shape(name)  # an image, or its rows as a sequence
    model = build_model(name, kwargs={"num_classes": 10}, input_shape=shape).eval()
    metadata = artifact_metadata(tiny_data.preprocessing, list(tiny_data.classes), name, "dense")
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, shape, path, opset=18, metadata=metadata)
    x, _ = tiny_data.tensors("test", limit=7)
    x = x.reshape(len(x), *shape)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_logits(path, x), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(onnx_logits(path, x[:1]), expected[:1], rtol=0, atol=TOLERANCE)
    params, _ = parameter_counts(onnx.load(str(path)))
    # BatchNorm's scale and shift are not counted as weights (onnx_tools.parameter_counts)
    batchnorm = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    }
    assert params == sum(p.numel() for p in model.parameters() if id(p) not in batchnorm)
    assert len(prunable_layers(model)) >= 1
