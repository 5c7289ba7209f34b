"""Packed weights: a pruned, quantized model stored as only what is needed, run at dense speed.

    packed = pack_model(
        onnx.load("pruned-int4-static.onnx"), onnx.load("pruned.onnx"), PackOptions()
    )

Input is a QDQ model whose weights are symmetric integer codes (`DequantizeLinear` of an
initializer with zero point 0, as the quantize stage writes them). Each such weight is
stored as:

- `<w>.steps`  uint8: the gaps between its non-zero positions in the flattened weight
  (the first is the position itself); a gap over 255 is split by filler entries of 255
  whose code is 0, which write a zero where a zero already is;
- `<w>.codes`  the codes of those entries, in the weight's own integer type (4 bits each
  for int4), or, for a weight of another width b (PackOptions.widths: 2, 3, 5, 6, 7 bits),
  as a bit stream: each code minus the smallest code of its width, in b bits, least
  significant bit first, 8 / b codes to a byte (`pack_bits`), its length in bits in
  `<w>.bitlen`;
- `<w>.scale`  the per-channel scales (float32, or float16 with `scales = "float16"`).

The dense float weight is rebuilt by standard ops whose inputs are all initializers:

    positions = CumSum(Cast(steps, int64));  values = Cast(codes, float)
    weight    = Reshape(ScatterND(ConstantOfShape([size]), positions, values), shape) * scale

(the gap stream and its decode ops are compress.encode.gaps, which codebook files share).
A bit stream is read by standard ops too: BitShift(Unsqueeze(bytes), [0..7]) & 1 gives its
bits, Slice keeps the first `bitlen`, and MatMul with [1, 2, 4, ...] (after a Reshape to
one row per code) plus the smallest code gives the codes as floats. A weight denser than
about a third is stored whole instead (`<w>.q`, or `<w>.qbits` + `<w>.qshape` as a bit
stream).

onnxruntime constant-folds such a subgraph once, when the session is created, so
inference runs the same dense float kernels as the float model (and holds the weight
decoded, at dense size, in memory). With graph optimizations disabled the decode runs on
every call instead; the file's metadata says so (`encoding`). Other dequantized
initializers (biases) are rebuilt the same way from their stored integers.

The quantize stage then gives every value inside the graph a short name (onnx_tools.compact_names:
`<w>` becomes an id of a letter or two, the suffixes stay).

`activations = "float"` (default) puts the rebuilt weights into the float model's own graph:
weights keep their exact 4-bit values, activations stay float (as in int4
quantization-aware training), and every call is the float model's dense MatMul/Conv. With
`activations = "int8"` the QDQ graph is kept, activation quantize/dequantize pairs included
(it folds ReLU into them, too), and the logits are bit-identical to the QDQ model's as
written (its ONNX semantics: onnxruntime with graph optimizations disabled). An optimized
onnxruntime session of the QDQ model itself fuses some bias additions into QLinearAdd,
which rounds differently (on LeNet-300: logits up to 0.32 apart, the same top-1 on all
10,000 test images).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.bits import code_range
from compress.encode import gaps as stream
from compress.encode.gaps import MAX_GAP, decode_gaps, encode_gaps
from compress.encode.onnx_tools import smaller_walk, xz_size
from compress.errors import CompressError

ENCODING_NOTE = (
    "packed: each weight is stored as its non-zero positions (uint8 gaps), codes and "
    "per-channel scales, rebuilt into a dense float weight by ops that onnxruntime "
    "constant-folds when the session is created (graph optimizations on, the default); "
    "with graph optimizations disabled the rebuild runs on every call"
)
_INT4_OPSET = 21  # Cast from 4-bit integer types is defined from opset 21
_SIGNED = {TensorProto.INT4, TensorProto.INT8}
_AXES1 = np.array([1], np.int64)
MAX_STEP = MAX_GAP


@dataclass(frozen=True)
class PackOptions:
    scales: str = "float32"  # float32 | float16: how per-channel scales are stored
    activations: str = "float"  # float: the float model's graph | int8: the QDQ graph, pairs kept
    linear: str = (
        "float"  # float: MatMul on the rebuilt weight | matmulnbits: com.microsoft.MatMulNBits
    )
    # Float initializer (the weight a DequantizeLinear rebuilds) -> the width of its codes:
    # a width its integer type does not have natively (not int4 at 4, int8 at 8) is stored
    # as a bit stream. Weights not named keep their type.
    widths: Mapping[str, int] = field(default_factory=dict)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 bytes holding each code minus its width's smallest code in `bits` bits, least
    significant bit first (the last byte padded with zeros)."""
    offset = codes.astype(np.int16).reshape(-1) - code_range(bits)[0]
    planes = (offset[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_bits(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    """The `count` codes of a `pack_bits` stream (what its decode ops compute)."""
    planes = np.unpackbits(data, bitorder="little")[: count * bits].reshape(count, bits)
    return (planes.astype(np.int16) << np.arange(bits)).sum(1) + code_range(bits)[0]


def stored_width(init: onnx.TensorProto, width: int | None) -> int | None:
    """The width to store an integer initializer's codes at as a bit stream, or None to keep
    its own type (no width asked, or int4 at 4 bits, int8 at 8)."""
    if width is None:
        return None
    native = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT8: 8, TensorProto.UINT8: 8}
    return None if native.get(init.data_type) == width else width


def delta_stream(flat_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 steps, codes) of the non-zero entries of a flat code array: a gap stream
    (compress.encode.gaps) from origin 0, so positions == cumsum(steps)."""
    positions = np.flatnonzero(flat_codes)
    if len(positions) == 0:  # an all-zero weight: one filler keeps every tensor non-empty
        return np.zeros(1, np.uint8), np.zeros(1, flat_codes.dtype)
    return encode_gaps(positions, flat_codes[positions], origin=0)


def decode_stream(steps: np.ndarray, codes: np.ndarray, size: int) -> np.ndarray:
    """The flat code array back from `delta_stream` (what the ONNX subgraph computes)."""
    flat = np.zeros(size, codes.dtype)
    flat[decode_gaps(steps, origin=0)] = codes
    return flat


class _Builder:
    """Collects the nodes and initializers of the rebuilt model."""

    def __init__(self, model: onnx.ModelProto):
        self.inits = {i.name: i for i in model.graph.initializer}
        self.new_inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        # 4-bit arrays (ml_dtypes int4, as numpy_helper reads them) are stored two to a byte.
        self.new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))  # unnamed: fewer bytes
        return output

    def shared(self, name: str, array: np.ndarray) -> str:
        """A small constant that every rebuild uses, stored once."""
        if name not in {i.name for i in self.new_inits}:
            self.const(name, array)
        return name

    def values(self, name: str, codes: np.ndarray, width: int | None, output: str) -> str:
        """The codes as a flat float tensor: stored in their own type and cast, or (`width`)
        as a bit stream and read by the ops in the module docstring."""
        if width is None:
            return self.node("Cast", [self.const(name, codes)], output, to=TensorProto.FLOAT)
        count = int(codes.size)
        data = self.node(
            "Unsqueeze",
            [self.const(name, pack_bits(codes, width)), self.shared("packed.axes1", _AXES1)],
            f"{output}.bytes",
        )
        shifts = self.shared("packed.shifts", np.arange(8, dtype=np.uint8))
        shifted = self.node("BitShift", [data, shifts], f"{output}.shifted", direction="RIGHT")
        bit = self.node(
            "BitwiseAnd",
            [shifted, self.shared("packed.bit", np.array(1, np.uint8))],
            f"{output}.bit",
        )
        bits = self.node(
            "Reshape",
            [
                self.node("Cast", [bit], f"{output}.bitf", to=TensorProto.FLOAT),
                self.shared("packed.flat", np.array([-1], np.int64)),
            ],
            f"{output}.bits",
        )
        used = self.node(
            "Slice",
            [
                bits,
                self.shared("packed.start", np.array([0], np.int64)),
                self.const(
                    f"{name.rpartition('.')[0]}.bitlen", np.array([count * width], np.int64)
                ),
            ],
            f"{output}.used",
        )
        rows = self.node(
            "Reshape",
            [used, self.shared(f"packed{width}.rows", np.array([-1, width], np.int64))],
            f"{output}.rows",
        )
        powers = self.shared(f"packed{width}.powers", 2.0 ** np.arange(width, dtype=np.float32))
        offset = self.node("MatMul", [rows, powers], f"{output}.offset")
        smallest = np.array(code_range(width)[0], np.float32)
        return self.node("Add", [offset, self.shared(f"packed{width}.qmin", smallest)], output)

    def scale(self, base: str, scale: np.ndarray, shape: list[int], axis: int, dtype: str) -> str:
        """The scale as a float tensor that broadcasts over a weight of `shape` along `axis`."""
        if scale.ndim == 1 and len(shape) > 1:
            broadcast = [1] * len(shape)
            broadcast[axis] = scale.size
            scale = scale.reshape(broadcast)
        if dtype == "float16":
            stored = self.const(f"{base}.scale16", scale.astype(np.float16))
            return self.node("Cast", [stored], f"{base}.scale_f", to=TensorProto.FLOAT)
        return self.const(f"{base}.scale", scale.astype(np.float32))


def _stream_bytes(steps: np.ndarray, values: np.ndarray) -> int:
    """xz bytes of a weight's steps and codes: how much its walk order costs in a package."""
    return xz_size(steps, values.astype(np.int8))


def _sparse_is_smaller(init: onnx.TensorProto, width: int | None = None) -> bool:
    """Whether steps + codes take fewer bytes than all the codes (weights denser than ~1/3 do
    not)."""
    codes = _array(init)
    bits = width or (4 if init.data_type in (TensorProto.INT4, TensorProto.UINT4) else 8)
    entries = len(delta_stream(codes.flatten())[0])
    return entries * (8 + bits) < codes.size * bits


def _array(init: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(init)


def _rebuild_sparse(
    b: _Builder, dq: onnx.NodeProto, options: PackOptions, output: str, width: int | None
) -> tuple[str, str]:
    """A symmetric integer weight -> steps, codes, scales and the subgraph that rebuilds it."""
    x = b.inits[dq.input[0]]
    codes = _array(x)
    base = dq.input[0].removesuffix("_quantized")
    # Rows or, for a matrix, columns: whichever walk compresses smaller.
    (steps, values), stored_codes, transposed = smaller_walk(
        codes, delta_stream, cost=lambda e: _stream_bytes(*e)
    )
    steps_name = b.const(f"{base}.steps", steps)
    indices = stream.positions(
        b.node,
        steps_name,
        b.shared("packed.axis0", np.array(0, np.int64)),
        f"{base}.indices",
        column=b.shared("packed.axes1", np.array([1], np.int64)),
    )
    zeros = stream.zeros(
        b.node, b.const(f"{base}.size", np.array([codes.size], np.int64)), f"{base}.zeros"
    )
    floats = b.values(f"{base}.codes", values, width, f"{base}.values")
    dense = stream.scatter(
        b.node,
        zeros,
        indices,
        floats,
        b.const(f"{base}.shape", np.array(stored_codes.shape, np.int64)),
        f"{base}.codes_f",
        transposed,
    )
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    scale = _array(b.inits[dq.input[1]])
    axis = attrs.get("axis", 1) % max(codes.ndim, 1)
    scale_name = b.scale(base, scale, list(codes.shape), axis, options.scales)
    b.node("Mul", [dense, scale_name], output)
    return dense, scale_name


def _rebuild_dense(
    b: _Builder, dq: onnx.NodeProto, options: PackOptions, output: str, width: int | None
) -> tuple[str, str]:
    """A dequantized initializer kept whole (a bias, a dense weight): (float(q) - zero point)
    * scale."""
    base = dq.input[0].removesuffix("_quantized")
    x = b.inits[dq.input[0]]
    if width is None:
        value = b.values(f"{base}.q", _array(x), None, f"{base}.qf")
    else:  # a bit stream, back to the weight's shape
        flat = b.values(f"{base}.qbits", _array(x), width, f"{base}.qflat")
        shape = b.const(f"{base}.qshape", np.array(x.dims, np.int64))
        value = b.node("Reshape", [flat, shape], f"{base}.qf")
    zero = _array(b.inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else None
    if zero is not None and np.any(zero != 0):
        value = b.node(
            "Sub", [value, b.const(f"{base}.zp", zero.astype(np.float32))], f"{base}.centred"
        )
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    scale = _array(b.inits[dq.input[1]])
    shape = list(_array(x).shape)
    axis = attrs.get("axis", 1) % max(len(shape), 1) if shape else 0
    scale_name = b.scale(base, scale, shape, axis, options.scales)
    b.node("Mul", [value, scale_name], output)
    return value, scale_name


NBITS_BLOCK = 32  # MatMulNBits block size: one scale per 32 inputs (here all of a channel's equal)


def _matmul_nbits(
    b: _Builder, node: onnx.NodeProto, codes: str, scale: str, k: int, n: int
) -> onnx.NodeProto:
    """MatMul(A, W) -> com.microsoft.MatMulNBits(A, 4-bit blocks of W's codes, scales).

    The blocks are built from the rebuilt codes by foldable ops as well: transposed to
    [N, K], padded to whole blocks, offset by 8 (MatMulNBits' default zero point for 4
    bits), and two codes packed into each byte, low nibble first.
    """
    base = node.input[1]
    blocks = -(-k // NBITS_BLOCK)
    t = b.node("Transpose", [codes], f"{base}.nb_t", perm=[1, 0])
    if blocks * NBITS_BLOCK > k:
        pads = b.const(f"{base}.nb_pads", np.array([0, 0, 0, blocks * NBITS_BLOCK - k], np.int64))
        t = b.node("Pad", [t, pads], f"{base}.nb_padded")
    shifted = b.node(
        "Add", [t, b.shared("packed.eight", np.array(8.0, np.float32))], f"{base}.nb_u"
    )
    pairs = b.node(
        "Reshape",
        [
            shifted,
            b.const(f"{base}.nb_pairs", np.array([n, blocks, NBITS_BLOCK // 2, 2], np.int64)),
        ],
        f"{base}.nb_pairs_r",
    )
    low = b.node(
        "Gather", [pairs, b.shared("packed.zero", np.array(0, np.int64))], f"{base}.nb_lo", axis=3
    )
    high = b.node(
        "Gather", [pairs, b.shared("packed.one", np.array(1, np.int64))], f"{base}.nb_hi", axis=3
    )
    high16 = b.node(
        "Mul", [high, b.shared("packed.sixteen", np.array(16.0, np.float32))], f"{base}.nb_hi16"
    )
    packed = b.node(
        "Cast",
        [b.node("Add", [high16, low], f"{base}.nb_bytes_f")],
        f"{base}.nb_bytes",
        to=TensorProto.UINT8,
    )
    column = b.node(
        "Reshape", [scale, b.const(f"{base}.nb_col", np.array([n, 1], np.int64))], f"{base}.nb_sc"
    )
    per_block = b.node(
        "Expand",
        [column, b.const(f"{base}.nb_grid", np.array([n, blocks], np.int64))],
        f"{base}.nb_sg",
    )
    scales = b.node(
        "Reshape",
        [per_block, b.shared("packed.flat", np.array([-1], np.int64))],
        f"{base}.nb_scales",
    )
    return helper.make_node(
        "MatMulNBits",
        [node.input[0], packed, scales],
        list(node.output),
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=NBITS_BLOCK,
        accuracy_level=4,
    )


def _without_unused(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Nodes whose results something uses (a weight MatMulNBits replaced is not rebuilt)."""
    while True:
        used = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def pack_model(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto | None = None,
    options: PackOptions = PackOptions(),
) -> onnx.ModelProto:
    """The packed form of a QDQ model (see the module docstring).

    activations "float": the graph is `float_model`'s (the model `qdq` was quantized from),
    each of its initializers that `qdq` dequantizes replaced by the rebuild of its codes;
    "int8": the graph is `qdq`'s, each DequantizeLinear of an initializer replaced.
    """
    if (
        options.scales not in ("float32", "float16")
        or options.activations not in ("float", "int8")
        or options.linear not in ("float", "matmulnbits")
    ):
        raise CompressError(f"packed: unknown options {options}")
    if options.linear == "matmulnbits" and options.activations != "float":
        raise CompressError('packed: MatMulNBits takes float activations (activations = "float")')
    if options.activations == "float" and float_model is None:
        raise CompressError(
            "packed: float activations need the float model the QDQ model came from"
        )
    b = _Builder(qdq)
    model = onnx.ModelProto.FromString(
        (qdq if options.activations == "int8" else float_model).SerializeToString()
    )
    float_inits = {i.name for i in model.graph.initializer}
    replaced: set[str] = set()
    four_bit: dict[
        str, tuple[str, str, tuple[int, ...]]
    ] = {}  # weight -> float codes, scale, shape
    for node in qdq.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in b.inits:
            continue
        if options.activations == "int8":
            output = node.output[0]
        else:  # the float initializer this dequantizes, e.g. "fc.weight" <- "fc.weight_quantized"
            output = node.input[0].removesuffix("_quantized")
            if output not in float_inits:
                raise CompressError(
                    f"packed: {node.input[0]} has no float initializer {output} in the float model"
                )
        replaced.add(node.output[0] if options.activations == "int8" else output)
        x = b.inits[node.input[0]]
        zero = (
            _array(b.inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        )
        width = stored_width(x, options.widths.get(output))
        if (
            x.data_type in _SIGNED
            and len(x.dims) >= 2
            and not np.any(zero)
            and _sparse_is_smaller(x, width)
        ):
            codes, scale = _rebuild_sparse(b, node, options, output, width)
        else:
            codes, scale = _rebuild_dense(b, node, options, output, width)
        if x.data_type == TensorProto.INT4 and len(x.dims) == 2 and not np.any(zero):
            four_bit[output] = (codes, scale, tuple(x.dims))
    if not replaced:
        raise CompressError(
            "packed: the model has no quantized weights to pack (quantize it first)"
        )
    if options.activations == "int8":
        rest = [
            n
            for n in model.graph.node
            if not (n.op_type == "DequantizeLinear" and n.output[0] in replaced)
        ]
    else:
        rest = list(model.graph.node)
    if options.linear == "matmulnbits":
        rest = [
            _matmul_nbits(b, n, *four_bit[n.input[1]][:2], *four_bit[n.input[1]][2])
            if n.op_type == "MatMul" and n.input[1] in four_bit
            else n
            for n in rest
        ]
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    nodes = _without_unused(b.nodes + rest, {o.name for o in model.graph.output})
    for node in nodes:  # the exporter's per-node notes (stack traces, scopes) are not needed to run
        del node.metadata_props[:]
        node.doc_string = ""
    used = {i for n in nodes for i in n.input}
    kept_inits = [i for i in model.graph.initializer if i.name in used and i.name not in replaced]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits + b.new_inits)
    del model.graph.value_info[:]
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < _INT4_OPSET:
            opset.version = _INT4_OPSET
    if not any(n.domain == "com.microsoft" for n in nodes):
        kept = [o for o in model.opset_import if o.domain != "com.microsoft"]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    model.ir_version = max(model.ir_version, 10)
    return model


def layer_weights(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Layer (module name) -> (its weight initializer, the axis of its output channels): the
    constant weights of Conv ([out, in, ...]: axis 0) and MatMul ([in, out]: axis 1) nodes,
    named `<layer>.weight` as the export names them."""
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul") and len(node.input) > 1 and node.input[1] in inits:
            weight = node.input[1]
            found[weight.removesuffix(".weight")] = (weight, 0 if node.op_type == "Conv" else 1)
    return found


def quantize_weight(
    weight: np.ndarray, bits: int, axis: int, scales: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scale per channel along `axis`) of a float weight at `bits`, as
    compress.qat.fake_quantize computes them (float32 arithmetic, round half to even); with
    `scales = "float16"` the scale the file stores is that scale in float16."""
    qmin, qmax = code_range(bits)
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    absmax = np.maximum(np.abs(moved.reshape(len(moved), -1)).max(1), np.float32(1e-12))
    scale = (np.float32(2) * absmax / np.float32(qmax - qmin)).astype(np.float32)
    shape = [1] * moved.ndim
    shape[0] = -1
    codes = np.clip(np.round(moved / scale.reshape(shape)), qmin, qmax).astype(np.int8)
    if scales == "float16":
        scale = scale.astype(np.float16).astype(np.float32)
    return np.moveaxis(codes, 0, axis), scale


def dequantized(weight: np.ndarray, bits: int, axis: int, scales: str = "float32") -> np.ndarray:
    """The float weight a packed file at `bits` rebuilds from `weight`."""
    codes, scale = quantize_weight(weight, bits, axis, scales)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return (codes.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def qdq_of(float_model: onnx.ModelProto, widths: Mapping[str, int], scales: str) -> onnx.ModelProto:
    """A model of only DequantizeLinear nodes, one per weight of `widths` (initializer ->
    bits), whose codes and scales are `quantize_weight`'s: what pack_model packs (with
    `activations = "float"`) into the float model's graph."""
    axes = dict(layer_weights(float_model).values())
    inits = {i.name: i for i in float_model.graph.initializer}
    nodes, tensors = [], []
    for name, bits in widths.items():
        codes, scale = quantize_weight(numpy_helper.to_array(inits[name]), bits, axes[name], scales)
        if bits == 4:  # stored in onnx's own 4-bit type, two to a byte, as static-int4's
            codes = codes.astype(ml_dtypes.int4)
        tensors += [
            numpy_helper.from_array(codes, f"{name}_quantized"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
        ]
        node_inputs = [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"]
        nodes.append(
            helper.make_node("DequantizeLinear", node_inputs, [f"{name}_dq"], axis=axes[name])
        )
    graph = helper.make_graph(nodes, "qdq", [], [], tensors)
    return helper.make_model(graph)


def weight_bytes(codes: np.ndarray, bits: int) -> int:
    """Bytes a packed weight's codes (and gaps) take at `bits`, by pack_model's choice:
    sparse (a one-byte gap and a code per entry) or whole, whichever is smaller."""
    entries = len(delta_stream(codes.reshape(-1))[0])
    return -(-min(entries * (8 + bits), codes.size * bits) // 8)
