"""Gap streams: the non-zero positions of a flat tensor stored as one-byte gaps, and the ONNX
ops that rebuild the positions (compress.encode.packed and .codebook store weights this way).

    gaps, codes = encode_gaps(np.flatnonzero(flat), flat[np.flatnonzero(flat)], origin=0)
    positions = decode_gaps(gaps, origin=0)              # == np.flatnonzero(flat)

Each gap is the distance from the previous entry's position, the first one's from `origin`
(0: the first gap is the first position itself; -1: one more). A gap over 255 is split by
filler entries of gap 255 whose code is 0, which write a zero where a zero already is. So
positions = CumSum(gaps) + origin, in numpy and in the graph (`positions`), and

    ScatterND(ConstantOfShape([size]), positions, values) -> Reshape(shape) [-> Transpose]

(`zeros`, `scatter`) is the dense tensor again. onnxruntime folds such a subgraph, whose inputs
are all initializers, into a plain initializer when the session is created.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto, numpy_helper

MAX_GAP = 255  # gaps are bytes

# node(op, inputs, output, **attributes) -> output: how the caller adds a node to its graph.
Node = Callable[..., str]


def encode_gaps(
    positions: np.ndarray, codes: np.ndarray, origin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 gaps, codes with a 0 for each filler) of entries `codes` at ascending `positions`."""
    gaps = np.diff(positions, prepend=origin)
    # A gap g needs (g - 1) // 255 fillers before its entry (with origin 0 the first may be 0).
    fillers = np.maximum(gaps - 1, 0) // MAX_GAP
    total = len(positions) + int(fillers.sum())
    out_gaps = np.full(total, MAX_GAP, dtype=np.uint8)
    out_codes = np.zeros(total, dtype=codes.dtype)
    ends = np.cumsum(fillers + 1) - 1  # where each real entry lands
    out_gaps[ends] = gaps - MAX_GAP * fillers
    out_codes[ends] = codes
    return out_gaps, out_codes


def decode_gaps(gaps: np.ndarray, origin: int = 0) -> np.ndarray:
    """The positions of a gap stream (fillers included), as the graph computes them."""
    return np.cumsum(gaps.astype(np.int64)) + origin


def positions(
    node: Node,
    gaps: str,
    axis: str,
    output: str,
    origin: str | None = None,
    column: str | None = None,
) -> str:
    """Nodes computing the positions of the gap stream `gaps` (an initializer name):
    CumSum(Cast(gaps, int64)) along the scalar `axis`, minus the scalar `origin` (the name
    of a 1 for origin -1), then given a trailing axis by Unsqueeze(`column` = [1]) where the
    gaps are stored flat. ScatterND takes them as indices."""
    value = node("Cast", [gaps], f"{output}.int64", to=TensorProto.INT64)
    value = node("CumSum", [value, axis], f"{output}.end" if origin or column else output)
    if origin:
        value = node("Sub", [value, origin], output if not column else f"{output}.flat")
    if column:
        value = node("Unsqueeze", [value, column], output)
    return value


def zeros(node: Node, size: str, output: str) -> str:
    """A float32 vector of zeros, `size` (a [1] int64 initializer) long."""
    return node(
        "ConstantOfShape", [size], output, value=numpy_helper.from_array(np.zeros(1, np.float32))
    )


def scatter(
    node: Node, zeros: str, positions: str, values: str, shape: str, output: str, transposed: bool
) -> str:
    """The dense tensor: `values` at `positions` of `zeros`, reshaped to `shape` (and
    transposed back for a matrix stored column by column)."""
    flat = node("ScatterND", [zeros, positions, values], f"{output}.flat")
    if not transposed:
        return node("Reshape", [flat, shape], output)
    stored = node("Reshape", [flat, shape], f"{output}.stored")
    return node("Transpose", [stored], output, perm=[1, 0])
