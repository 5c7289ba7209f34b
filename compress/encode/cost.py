"""What an ONNX artifact costs to run: multiply-accumulates and the weight memory of a session.

    macs = count_macs(onnx.load("pruned.onnx"))          # at batch 1, from the graph's shapes
    held = session_weight_bytes(Path("pruned.onnx"))     # initializer bytes after load-time folding

MACs are counted as the kernels execute them: every MatMul, Gemm and Conv (and their
quantized forms) at its full shape, zeros included, since onnxruntime's CPU kernels are
dense. Weight memory is what a session keeps after its load-time graph optimizations: a
weight rebuilt from a compact encoding by constant-foldable ops is held decoded, at its
dense size, and that is the figure reported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

# op type -> (input index of the activation, input index of the weight); a Q-linear op
# carries scales and zero points between them.
_MATMULS = {"MatMul": (0, 1), "Gemm": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_SUB_BYTE = {onnx.TensorProto.INT4: 0.5, onnx.TensorProto.UINT4: 0.5}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's shape with the batch axis fixed to 1 (None where unknown)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim
            ]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _known(shape) -> bool:
    return shape is not None and all(d is not None for d in shape)


def count_macs(model: onnx.ModelProto) -> int | None:
    """Multiply-accumulates of one sample through MatMul/Gemm/Conv nodes; None if a shape is
    unknown."""
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type in _MATMULS:
            out = shapes.get(node.output[0])
            a = shapes.get(node.input[_MATMULS[node.op_type][0]])
            if not (_known(out) and _known(a)):
                return None
            attrs = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            inner = a[-2] if node.op_type == "Gemm" and attrs.get("transA", 0) else a[-1]
            total += int(np.prod(out)) * inner
        elif node.op_type == "MatMulNBits":
            out = shapes.get(node.output[0])
            attrs = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            if not _known(out):
                return None
            total += int(np.prod(out)) * attrs["K"]
        elif node.op_type in _CONVS:
            out = shapes.get(node.output[0])
            weight = shapes.get(node.input[_CONVS[node.op_type]])
            if not (_known(out) and _known(weight)):
                return None
            # Each output element sums (in channels / groups) x kernel products.
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
    return total


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes the initializers take in memory (4-bit types two to a byte)."""
    total = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type in _SUB_BYTE:
            total += (count + 1) // 2
        else:
            total += count * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def session_weight_bytes(path: Path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> int:
    """Initializer bytes of the graph an onnxruntime session at `level` holds for the file.

    onnxruntime writes the graph it runs (after constant folding and fusions) to
    `optimized_model_filepath`; its initializers are the weights the session keeps.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return initializer_bytes(onnx.load(options.optimized_model_filepath))
