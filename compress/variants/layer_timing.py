"""Whether each layer's int8 kernel beats its float one on this machine: the evidence behind
[quantize] static_layers = "faster".

    rows = time_layers(model, quantize, threads=1)   # one row per Conv / MatMul / Gemm
    exclude = float_nodes(model, rows, frontend)     # -> quantize_static(nodes_to_exclude=)
    check = time_models([model, faster, every], x)   # the whole files, against float
    choose(check)                                    # "faster", "all" or "none"

Each layer is timed alone: a one-node float model (its input's shape from shape inference
of the whole model, batch 1; its weights as initializers) and the same node as `quantize`
writes it (QDQ: QuantizeLinear on the input, the int8 kernel onnxruntime fuses,
DequantizeLinear on the output), calibrated on random inputs of that shape. The two are
timed interleaved in rounds (compress.latency), so load on the machine falls on both alike;
the ratio int8 / float is the median per-round ratio with its 95% interval.

The rule: a layer is quantized when the interval's upper end is below 1, i.e. its int8 form
is clearly faster. A layer whose int8 form is as fast (the interval holds 1) stays float:
it would gain nothing in speed and cost accuracy. The one-node int8 model pays for
converting its input to int8 and its output back; between two int8 layers of the real
graph that conversion is not paid, but a file mixing float and int8 layers pays it at
every border. So the whole files are timed too (`time_models`): `choose` keeps int8 on the
faster layers, unless int8 on all is clearly faster than that, and the float graph when the
one kept is clearly slower than float. A layer that cannot be timed alone (an input shape
shape inference leaves unknown, or more than one activation input) stays float, and its
row says why (a node without a name cannot be excluded: it is quantized, untimed).

Cost: per layer, one small quantize_static call and 2 x (WARMUP + REPETITIONS) calls of a
one-layer model; then 3 x (WARMUP + REPETITIONS) calls of the whole model: a LeNet-sized
model takes a second or two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from compress.encode.onnx_tools import make_session
from compress.latency import summarize, timed_rounds

log = logging.getLogger(__name__)

OP_TYPES = ("Conv", "MatMul", "Gemm")  # the layers quantize_static writes an int8 kernel for
REPETITIONS = 200  # timed calls per layer and form
ROUNDS = 20  # 10 calls each; 20 ratios give a 95% interval from the 6th to the 15th
CALIBRATION_SAMPLES = 16  # random inputs the one-node model is calibrated on

# (one-node float model, calibration inputs) -> the same model quantized
Quantize = Callable[[onnx.ModelProto, np.ndarray], onnx.ModelProto]


def time_layers(
    model: onnx.ModelProto,
    quantize: Quantize,
    threads: int = 1,
    exclude: tuple[str, ...] | list[str] = (),
    seed: int = 0,
) -> list[dict]:
    """One row per Conv / MatMul / Gemm node of `model` (in graph order, those in `exclude`
    left out): node, layer (its weight's name less `.weight`: the module), op, float_ms and
    int8_ms (median call), ratio (int8 / float) with its interval ratio_low..ratio_high, and
    quantized (the rule above); `note` where it was not timed."""
    shapes = _input_shapes(model)
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    rows = []
    for node in model.graph.node:
        if node.op_type not in OP_TYPES or node.name in exclude:
            continue
        weights = [name for name in node.input if name in inits]
        layer = weights[0].removesuffix(".weight") if weights else node.name
        row = {"node": node.name, "layer": layer, "op": node.op_type}
        activations = [name for name in node.input if name and name not in inits]
        shape = shapes.get(activations[0]) if len(activations) == 1 else None
        if not node.name:
            # quantize_static excludes nodes by name: this one is quantized, as with "all"
            row.update(quantized=True, note="no node name to exclude it by: not timed")
        elif len(activations) != 1:
            row.update(quantized=False, note=f"{len(activations)} activation inputs")
        elif shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            row.update(quantized=False, note="input shape unknown")
        else:
            single = _one_node_model(model, node, inits, activations[0], shape)
            samples = rng.standard_normal((CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)
            row.update(_timed(single, quantize(single, samples), samples, threads))
        rows.append(row)
    return rows


def float_nodes(model: onnx.ModelProto, rows: list[dict], exclude: list[str]) -> list[str]:
    """The nodes to leave float: `exclude`, the layers of `rows` not quantized, and every
    other node (no layer of `rows`) all of whose activation inputs come from float nodes or
    the model's inputs: a float layer's bias Add (the export writes a Linear as MatMul +
    Add), a pooling or a residual Add between float layers. The quantizer would otherwise put
    int8 around them, converting a float region's activations to int8 and back for nothing;
    with no layer quantized, no node is."""
    inits = {i.name for i in model.graph.initializer}
    layers = {r["node"]: r["quantized"] for r in rows}
    float_tensors = {x.name for x in model.graph.input}
    names = list(exclude)
    for node in model.graph.node:
        activations = [x for x in node.input if x and x not in inits]
        if node.name in layers:
            left_float = not layers[node.name]
        else:
            left_float = node.name in exclude or (
                bool(node.name) and all(x in float_tensors for x in activations)
            )
        if left_float:
            float_tensors.update(node.output)
            if node.name and node.name not in names:
                names.append(node.name)
    return names


def time_models(models: list[onnx.ModelProto], x: np.ndarray, threads: int = 1) -> dict:
    """The whole files timed interleaved: [float, int8 on the faster layers, int8 on all].

    Per candidate (`faster`, `all`): its median call in ms, its ratio to float with the 95%
    interval, and `all` against `faster` (all_vs_faster, with its interval)."""
    sessions = [make_session(m, threads) for m in models]
    times = timed_rounds(sessions, [x] * len(models), repetitions=REPETITIONS, rounds=ROUNDS)
    base = summarize(times)
    against_faster = summarize(times, base=1)[2]
    return {
        "float_ms": round(base[0]["p50"], 5),
        **{
            name: {
                "ms": round(row["p50"], 5),
                "ratio": round(row["vs_base"], 4),
                "ratio_low": round(row["vs_base_low"], 4),
                "ratio_high": round(row["vs_base_high"], 4),
            }
            for name, row in zip(("faster", "all"), base[1:], strict=True)
        },
        "all_vs_faster": [
            round(against_faster[k], 4) for k in ("vs_base", "vs_base_low", "vs_base_high")
        ],
    }


def choose(check: dict) -> str:
    """Which file the whole-model check keeps: "faster" (int8 on the faster layers), "all"
    (every layer int8, when it is clearly faster than that: layers alone pay conversions a
    chain of int8 layers does not) or "none" (the float graph, when the one kept would be
    clearly slower than float)."""
    kept = "all" if check["all_vs_faster"][2] < 1.0 else "faster"
    return "none" if check[kept]["ratio_low"] > 1.0 else kept


def layer_line(rows: list[dict]) -> str:
    """One log line: "int8 on 3 of 5 layers: conv2, fc1, fc2 faster; conv1, conv3 stay float"."""
    fast = [r["layer"] for r in rows if r["quantized"]]
    slow = [r["layer"] for r in rows if not r["quantized"]]
    if not fast:
        return f"int8 on none of {len(rows)} layers: no int8 kernel is faster; all stay float"
    line = f"int8 on {len(fast)} of {len(rows)} layers: {', '.join(fast)} faster"
    return line + (f"; {', '.join(slow)} stay float" if slow else "")


def _timed(single: onnx.ModelProto, quantized: onnx.ModelProto, x: np.ndarray, threads: int):
    sessions = [make_session(m, threads) for m in (single, quantized)]
    times = timed_rounds(sessions, [x, x], repetitions=REPETITIONS, rounds=ROUNDS)
    base, int8 = summarize(times)
    return {
        "float_ms": round(base["p50"], 5),
        "int8_ms": round(int8["p50"], 5),
        "ratio": round(int8["vs_base"], 4),
        "ratio_low": round(int8["vs_base_low"], 4),
        "ratio_high": round(int8["vs_base_high"], 4),
        "quantized": int8["vs_base_high"] < 1.0,
    }


def _input_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name -> its inferred dims (an int, or None where unknown)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            ]
    return shapes


def _one_node_model(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    activation: str,
    shape: list,
) -> onnx.ModelProto:
    """`node` alone: its activation input of `shape` with a free batch dimension, its
    initializers, its first output (the others it may have are not read)."""
    x = helper.make_tensor_value_info(activation, onnx.TensorProto.FLOAT, ["batch", *shape[1:]])
    y = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    weights = [inits[name] for name in node.input if name in inits]
    graph = helper.make_graph([node], "layer", [x], [y], weights)
    single = helper.make_model(graph, opset_imports=list(model.opset_import))
    single.ir_version = model.ir_version
    return single
