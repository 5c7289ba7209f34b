"""The gap stream packed and codebook weights share: positions back exactly, long runs of
zeros bridged by fillers, in numpy and in the ONNX ops that rebuild the tensor."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.encode import gaps


@pytest.mark.parametrize("origin", [0, -1])
def test_positions_come_back_and_long_gaps_are_bridged(origin):
    flat = np.zeros(2000, np.int8)
    flat[[0, 3, 700, 1999]] = [5, -2, 7, 1]
    positions = np.flatnonzero(flat)
    steps, codes = gaps.encode_gaps(positions, flat[positions], origin=origin)
    assert steps.dtype == np.uint8 and codes.dtype == np.int8
    decoded = gaps.decode_gaps(steps, origin=origin)
    assert decoded[codes != 0].tolist() == positions.tolist()
    rebuilt = np.zeros_like(flat)
    rebuilt[decoded] = codes  # fillers write a zero where a zero is
    np.testing.assert_array_equal(rebuilt, flat)
    assert (codes == 0).sum() == (697 - 1) // 255 + (1299 - 1) // 255


@pytest.mark.parametrize(("origin", "transposed"), [(0, False), (-1, True)])
def test_the_graph_rebuilds_the_tensor(origin, transposed):
    dense = np.zeros((30, 20), np.float32)
    dense[::7, ::3] = np.arange(1, 36, dtype=np.float32).reshape(5, 7)
    stored = dense.T if transposed else dense
    flat = stored.reshape(-1)
    positions = np.flatnonzero(flat)
    steps, values = gaps.encode_gaps(positions, flat[positions], origin=origin)
    nodes = []

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    index = gaps.positions(node, "g", "axis", "pos", origin="one" if origin else None, column="col")
    gaps.scatter(node, gaps.zeros(node, "size", "z"), index, "v", "shape", "y", transposed)
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in {
            "g": steps,
            "v": values,
            "axis": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "col": np.array([1], np.int64),
            "size": np.array([flat.size], np.int64),
            "shape": np.array(stored.shape, np.int64),
        }.items()
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dense.shape))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.zeros(1, np.float32)})[0], dense)
