"""The audio front end inside an exported graph: which nodes are it, and its features alone.

    names = frontend_node_names(model)     # quantizers leave these float (nodes_to_exclude)
    part = frontend_model(model)           # waveforms -> features, the artifact's own nodes
    is_frontend_tensor("frontend.dft")     # its constants: not parameters of the model

A sound artifact is the front end (compress.data.features.FrontEnd, exported as the module
`frontend`) followed by the classifier. Its fixed constants keep their buffer names
(`frontend.dft`, `frontend.mel`, ...); the front end's nodes are the last node that reads
one of them and every node it depends on. Its Conv and MatMul constants are exact
transforms, not learned weights: int8 or int4 would only add error, so every quantizer
leaves them float, and sizes and sparsity count the classifier's parameters only.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.utils
from onnx import helper, numpy_helper

PREFIX = "frontend."


def is_frontend_tensor(name: str) -> bool:
    return name.startswith(PREFIX)


def _last_frontend_node(model: onnx.ModelProto) -> int | None:
    readers = [
        i
        for i, node in enumerate(model.graph.node)
        if any(is_frontend_tensor(name) for name in node.input)
    ]
    return max(readers) if readers else None


def frontend_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes that compute the front end's features, in graph order ([] without one)."""
    last = _last_frontend_node(model)
    if last is None:
        return []
    nodes = model.graph.node
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    keep, todo = set(), [last]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [producer[name] for name in nodes[i].input if name in producer]
    return [nodes[i] for i in sorted(keep)]


def frontend_node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name for node in frontend_nodes(model)]


def frontend_output(model: onnx.ModelProto) -> str | None:
    """The tensor holding the standardized features [N, frames, coefficients]."""
    last = _last_frontend_node(model)
    return None if last is None else model.graph.node[last].output[0]


def frontend_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The artifact's front end alone: its input to the features (the same nodes)."""
    output = frontend_output(model)
    if output is None:
        raise ValueError("the model holds no audio front end")
    inferred = onnx.shape_inference.infer_shapes(model)
    extractor = onnx.utils.Extractor(inferred)
    return extractor.extract_model([model.graph.input[0].name], [output])


# --- the front end's constants, generated in the graph from a handful of scalars


class _Builder:
    """Nodes appended to a list, each output a fresh name under `frontend.gen/`."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, value, dtype=np.float32) -> str:
        name = f"frontend.gen/c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        output = output or f"frontend.gen/v{len(self.nodes)}"
        name = f"frontend.gen/{op_type}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    def arange(self, n: int) -> str:
        """int64 [n]: 0, 1, ..., n - 1."""
        return self.op("Range", self.const(0, np.int64), self.const(n, np.int64),
                       self.const(1, np.int64))  # fmt: skip

    def outer_mod(self, a: str, b: str, modulus: int) -> str:
        """float [len(a), len(b)]: (a_i * b_j) mod `modulus`, exact in int64."""
        product = self.op("Mul", self.op("Unsqueeze", a, self.const([1], np.int64)),
                          self.op("Unsqueeze", b, self.const([0], np.int64)))  # fmt: skip
        reduced = self.op("Mod", product, self.const(modulus, np.int64))
        return self.op("Cast", reduced, to=onnx.TensorProto.FLOAT)


def _dft(b: _Builder, f: dict, bins: int, output: str) -> None:
    window, n_fft = f["sample_rate"] * f["window_ms"] / 1000, f["n_fft"]
    window = int(round(window))
    n, k = b.arange(window), b.arange(bins)
    hann_angle = b.op("Mul", b.op("Cast", n, to=onnx.TensorProto.FLOAT),
                      b.const(2 * math.pi / window))  # fmt: skip
    hann = b.op("Sub", b.const(0.5), b.op("Mul", b.const(0.5), b.op("Cos", hann_angle)))
    angle = b.op("Mul", b.outer_mod(k, n, n_fft), b.const(2 * math.pi / n_fft))
    cos = b.op("Mul", b.op("Cos", angle), hann)
    sin = b.op("Mul", b.op("Neg", b.op("Sin", angle)), hann)
    both = b.op("Concat", cos, sin, axis=0)
    b.op("Unsqueeze", both, b.const([1], np.int64), output=output)


def _mel(b: _Builder, f: dict, bins: int, output: str) -> None:
    def to_mel(hertz: str) -> str:
        return b.op("Mul", b.const(1127.0), b.op("Log", b.op("Add", b.const(1.0),
                    b.op("Div", hertz, b.const(700.0)))))  # fmt: skip

    full = f["n_fft"] // 2 + 1
    index = b.op("Cast", b.arange(bins), to=onnx.TensorProto.FLOAT)
    hertz = b.op("Mul", index, b.const(f["sample_rate"] / 2 / (full - 1)))
    mel = b.op("Unsqueeze", to_mel(hertz), b.const([1], np.int64))  # [bins, 1]
    low, high = (math.log1p(v / 700.0) * 1127.0 for v in (f["f_min"], f["f_max"]))
    step = (high - low) / (f["n_mels"] + 1)
    edges = [low + step * i for i in range(f["n_mels"] + 2)]
    lower, center, upper = (b.const(edges[i : i + f["n_mels"]]) for i in (0, 1, 2))
    rising = b.op("Div", b.op("Sub", mel, lower), b.op("Sub", center, lower))
    falling = b.op("Div", b.op("Sub", upper, mel), b.op("Sub", upper, center))
    weights = b.op("Max", b.op("Min", rising, falling), b.const(0.0))
    not_dc = b.const(np.r_[0.0, np.ones(bins - 1)].reshape(bins, 1))  # the DC bin weighs 0
    b.op("Mul", weights, not_dc, output=output)


def _dct(b: _Builder, f: dict, output: str) -> None:
    m, c = f["n_mels"], f["n_mfcc"]
    odd = b.op("Add", b.op("Mul", b.arange(m), b.const(2, np.int64)), b.const(1, np.int64))
    angle = b.op("Mul", b.outer_mod(odd, b.arange(c), 4 * m), b.const(math.pi / (2 * m)))
    b.op("Mul", b.op("Cos", angle), b.const(math.sqrt(2.0 / m)), output=output)


def generate_constants(model: onnx.ModelProto, features: dict) -> int:
    """Replace the front end's DFT, mel and DCT matrices (initializers `frontend.dft`,
    `frontend.mel`, `frontend.dct`) by nodes that compute them from a few scalars, in
    place; returns the bytes saved. onnxruntime folds them once when a session starts, so
    inference runs the same Conv and MatMuls, and the file holds ~1 KB instead of the
    kernels (half a megabyte at the defaults). The values match compress.data.features'
    float64 construction to float32 rounding (the verify stage measures the features)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    if f"{PREFIX}dft" not in inits:
        return 0
    bins = int(inits[f"{PREFIX}dft"].dims[0]) // 2
    b = _Builder()
    _dft(b, features, bins, f"{PREFIX}dft")
    _mel(b, features, bins, f"{PREFIX}mel")
    if f"{PREFIX}dct" in inits:
        _dct(b, features, f"{PREFIX}dct")
    replaced = [f"{PREFIX}{n}" for n in ("dft", "mel", "dct") if f"{PREFIX}{n}" in inits]
    saved = sum(len(inits[n].SerializeToString()) for n in replaced)
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + b.inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(b.nodes + nodes)  # the generators first: the graph stays sorted
    return saved - sum(len(i.SerializeToString()) for i in b.inits)
