"""Activation memory of an ONNX file at batch 1: which tensors are alive at each node, and the peak.

    memory = activation_memory(onnx.load("pruned.onnx"))
    memory.peak_bytes                  # the largest total size of the tensors alive at once
    memory.peak_tensors                # (name, shape, bytes) of the tensors that make it
    for node in memory.per_node:       # in the order the file stores them
        print(node.name, node.live_bytes, node.weight_bytes, node.index == memory.peak_index)

Shapes come from ONNX shape inference with every symbolic dimension of the graph inputs set
to 1 (the batch). Nodes run in the order the file stores them (ONNX requires a topological
order). At each node the live tensors are the graph inputs and the node outputs produced so
far that this node or a later one still reads, plus this node's own outputs; graph outputs
stay live to the end. Each tensor counts at its own element type (an int8 activation one
byte per entry, int4 half a byte).

Weights are not activations: initializers, and every node whose inputs are all initializers
or outputs of such nodes (Constant, and the DequantizeLinear / decode ops of packed and
codebook files), which onnxruntime folds once when the session loads. What such a folded
tensor holds is counted as the weight of the node that reads it (`weight_bytes`).

Graphs with subgraphs (If, Loop, Scan) are not estimated: MemoryEstimateError says so, as
it does for a tensor whose shape inference leaves unknown.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from compress import tables
from compress.errors import CompressError

log = logging.getLogger(__name__)
_SUB_BYTE = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}


class MemoryEstimateError(CompressError):
    """The file's activation memory cannot be estimated (a subgraph, an unknown shape)."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    bytes: int


@dataclass(frozen=True)
class NodeMemory:
    """One node that runs per inference: the bytes alive while it runs and the weights it reads."""

    index: int  # position among the file's nodes
    name: str  # the node's name, else its first output
    op_type: str
    live_bytes: int
    weight_bytes: int  # initializers and load-time folded tensors this node reads


@dataclass(frozen=True)
class ActivationMemory:
    peak_bytes: int
    peak_index: int | None  # the node where the peak is (None: a graph without nodes)
    peak_tensors: tuple[Tensor, ...]  # the live set at the peak, largest first
    per_node: tuple[NodeMemory, ...]


def tensor_bytes(elem_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `elem_type` and `shape` (4-bit types two to a byte, rounded up)."""
    count = int(np.prod(shape)) if shape else 1
    if elem_type in _SUB_BYTE:
        return (count + 1) // 2
    if elem_type == onnx.TensorProto.STRING:
        raise MemoryEstimateError("a string tensor has no fixed size")
    return count * onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize


def _check_no_subgraphs(model: onnx.ModelProto) -> None:
    graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for node in model.graph.node:
        if any(attribute.type in graph_kinds for attribute in node.attribute):
            raise MemoryEstimateError(
                f"node {node.name or node.output[0]!r} ({node.op_type}) has a subgraph: "
                "activation memory of If/Loop/Scan graphs is not estimated"
            )


def tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | None, ...]]]:
    """Name -> (element type, shape at batch 1; None for a dimension left unknown)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1  # the symbolic batch axis
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise MemoryEstimateError(f"shape inference failed: {exc}") from None
    found = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        kind = value.type.tensor_type
        if value.type.HasField("tensor_type") and kind.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
            found[value.name] = (kind.elem_type, dims)
    for init in graph.initializer:
        found[init.name] = (init.data_type, tuple(init.dims))
    return found


def folded_at_load(model: onnx.ModelProto) -> set[str]:
    """Initializers and the outputs of nodes computed from them alone (folded at load)."""
    constant = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if all(name in constant for name in node.input if name):
            constant.update(name for name in node.output if name)
    return constant


def activation_memory(model: onnx.ModelProto) -> ActivationMemory:
    """The activation memory of `model` at batch 1 (see the module's docstring)."""
    _check_no_subgraphs(model)
    types = tensor_types(model)
    constant = folded_at_load(model)
    nodes = [
        (i, node)
        for i, node in enumerate(model.graph.node)
        if not all(name in constant for name in node.output if name)
    ]
    size = _sizer(types)
    end = len(model.graph.node)
    last_use = {value.name: end for value in model.graph.output}
    for i, node in nodes:
        for name in node.input:
            if name and name not in constant:
                last_use[name] = max(last_use.get(name, i), i)
    alive = {v.name: -1 for v in model.graph.input if v.name not in constant}  # name -> made at
    per_node, best = [], (-1, None, ())
    for i, node in nodes:
        outputs = [name for name in node.output if name]
        alive.update((name, i) for name in outputs)
        live = [name for name in alive if last_use.get(name, alive[name]) >= i]
        live_bytes = sum(size(name) for name in live)
        weights = sum(size(name) for name in dict.fromkeys(node.input) if name in constant)
        label = node.name or (outputs[0] if outputs else node.op_type)
        per_node.append(NodeMemory(i, label, node.op_type, live_bytes, weights))
        if live_bytes > best[0]:
            best = (live_bytes, i, tuple(live))
        alive = {name: made for name, made in alive.items() if last_use.get(name, made) > i}
    if not nodes:  # the graph outputs are its inputs
        live = tuple(alive)
        best = (sum(size(name) for name in live), None, live)
    peak_bytes, peak_index, live = best
    tensors = sorted(
        (Tensor(name, _shape(types, name), size(name)) for name in live),
        key=lambda t: (-t.bytes, t.name),
    )
    return ActivationMemory(peak_bytes, peak_index, tuple(tensors), tuple(per_node))


def node_lines(memory: ActivationMemory) -> list[str]:
    """The per-node table (`compress report RUN --memory`): in file order, the activation
    bytes alive while each node runs and the weight bytes it reads, the peak marked, then
    the tensors that make the peak."""
    rows = [
        [
            str(node.index),
            node.name,
            node.op_type,
            f"{node.live_bytes:,}",
            f"{node.weight_bytes:,}" if node.weight_bytes else "",
            "<- peak" if node.index == memory.peak_index else "",
        ]
        for node in memory.per_node
    ]
    headers = ["#", "node", "op", "live bytes", "weights", ""]
    lines = tables.text(headers, rows, left=[False, True, True, False, False, True], strip=True)
    made_of = ", ".join(f"{t.name} {list(t.shape)} {t.bytes:,}" for t in memory.peak_tensors)
    return [*lines, f"peak {memory.peak_bytes:,} bytes: {made_of}"]


def _shape(types: dict, name: str) -> tuple[int, ...]:
    if name not in types or any(d is None for d in types[name][1]):
        raise MemoryEstimateError(f"tensor {name!r}: shape inference leaves its shape unknown")
    return types[name][1]


def _sizer(types: dict):
    sizes: dict[str, int] = {}

    def size(name: str) -> int:
        if name not in sizes:
            shape = _shape(types, name)  # first: it says when inference left the tensor out
            sizes[name] = tensor_bytes(types[name][0], shape)
        return sizes[name]

    return size


# Run by `measured_ram_bytes` in a fresh interpreter: what a session takes beyond the imports.
_MEASURE = """
import sys
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
import numpy as np, onnxruntime as ort
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS:")
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.enable_cpu_mem_arena = False
options.log_severity_level = 3
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}
feed = {
    i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], types.get(i.type, "f4"))
    for i in session.get_inputs()
}
session.run(None, feed)
print(status("VmHWM:") - before)
"""


def measured_ram_bytes(path: Path, timeout: float = 120) -> int | None:
    """What an onnxruntime session takes on this machine to load `path` and run it once at
    batch 1, in a fresh process: its peak resident set (VmHWM, reset through
    /proc/self/clear_refs once `numpy` and `onnxruntime` are imported) after the session and
    the run, minus its resident set after those imports; one thread, the CPU arena off
    (memory is allocated as needed, not in arena chunks). (ru_maxrss would not do: Linux
    carries it over from the parent process.) None where /proc is missing (not Linux) or the
    measurement fails."""
    if not Path("/proc/self/clear_refs").is_file():
        return None
    try:
        result = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        log.warning("%s: RAM not measured: no result in %gs", path.name, timeout)
        return None
    if result.returncode != 0:
        log.warning("%s: RAM not measured: %s", path.name, result.stderr.strip()[-200:])
        return None
    return int(result.stdout.split()[-1])
