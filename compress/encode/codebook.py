"""Codebook encoding: weights with few distinct values stored as codes, rebuilt at load.

    encode_codebook(model)   # in place; returns {initializer: {levels, nonzero, ...}}

For each float initializer whose non-zero entries take at most 255 distinct values (a
weight-shared layer: compress.sharing), the file stores instead
  - `<name>.cb`:  the codebook, float32 [0, level_1, ..., level_k] (level 0 is exact zero);
  - `<name>.gap`: uint8 gaps between successive non-zero positions of the flattened tensor
                  (a gap over 255 is bridged by entries of code 0, which write a zero);
  - `<name>.code`: uint8 code of each entry (0 for a bridge);
and rebuilds the tensor under its old name with standard ops whose inputs are all
constants: CumSum(Cast(gap)) - 1 -> positions, Gather(codebook, Cast(code)) -> values,
ScatterND(ConstantOfShape(numel), positions, values) -> Reshape (and Transpose, for a
matrix stored column by column because that compresses smaller). onnxruntime folds such a
subgraph into a plain initializer when the session is created (graph optimizations on, its
default), so the model then runs at dense speed; with optimizations disabled the decode runs
on every call. The rebuilt tensor equals the original bit for bit. Gaps and codes are one
byte each: the .xz package's order-0 literal coder brings them close to their entropy.
The gap stream and its decode ops are compress.encode.gaps (packed weights share them).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.encode import gaps as stream
from compress.encode.frontend import is_frontend_tensor
from compress.encode.gaps import decode_gaps, encode_gaps
from compress.encode.onnx_tools import smaller_walk

MAX_LEVELS = 255  # codes are bytes: 0 is the zero level
MIN_SIZE = 16  # smaller tensors are not worth a decode subgraph


def gaps_and_codes(values: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) of a flat tensor whose non-zeros are among codebook[1:]: a gap stream
    (compress.encode.gaps) from origin -1, so positions == cumsum(gaps) - 1."""
    positions = np.flatnonzero(values)
    codes = np.searchsorted(codebook[1:], values[positions]) + 1
    return encode_gaps(positions, codes.astype(np.uint8), origin=-1)


def decode_positions(gaps: np.ndarray) -> np.ndarray:
    return decode_gaps(gaps, origin=-1)


def codebook_of(array: np.ndarray) -> np.ndarray | None:
    """[0, sorted distinct non-zero values] if the tensor is shared: at most MAX_LEVELS
    distinct non-zero values, each used twice on average (else codes cost more than values)."""
    if array.dtype != np.float32 or array.size < MIN_SIZE:
        return None
    nonzero = array[array != 0]
    levels = np.unique(nonzero)
    if len(levels) > MAX_LEVELS or 2 * len(levels) > len(nonzero):
        return None
    return np.concatenate([[0.0], levels]).astype(np.float32)


def encode_codebook(model: onnx.ModelProto) -> dict[str, dict]:
    """Replace every initializer with a small codebook by codes + a decode subgraph."""
    graph = model.graph
    stats: dict[str, dict] = {}
    kept, decoders, added = [], [], []

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        decoders.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        # an audio front end's constants stay as they are (compress.encode.frontend)
        codebook = None if is_frontend_tensor(init.name) else codebook_of(array)
        if codebook is None:
            kept.append(init)
            continue
        name = n = init.name
        (gaps, codes), stored, transposed = smaller_walk(
            array, partial(gaps_and_codes, codebook=codebook)
        )
        flat = stored.reshape(-1)
        added += [
            numpy_helper.from_array(codebook, f"{name}.cb"),
            numpy_helper.from_array(gaps.reshape(-1, 1), f"{name}.gap"),
            numpy_helper.from_array(codes, f"{name}.code"),
            numpy_helper.from_array(np.array([flat.size], dtype=np.int64), f"{name}.numel"),
            numpy_helper.from_array(np.array(stored.shape, dtype=np.int64), f"{name}.shape"),
        ]
        position = stream.positions(node, f"{n}.gap", f"{n}.axis", f"{n}.pos", origin=f"{n}.one")
        code = node("Cast", [f"{n}.code"], f"{n}.code64", to=TensorProto.INT64)
        value = node("Gather", [f"{n}.cb", code], f"{n}.val", axis=0)
        stream.scatter(
            node,
            stream.zeros(node, f"{n}.numel", f"{n}.zero"),
            position,
            value,
            f"{n}.shape",
            name,
            transposed,
        )
        added += [
            numpy_helper.from_array(np.array(0, dtype=np.int64), f"{n}.axis"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), f"{n}.one"),
        ]
        nonzero = int(np.count_nonzero(flat))
        stats[name] = {
            "levels": len(codebook) - 1,
            "nonzero": nonzero,
            "entries": len(codes),
            "code_entropy_bits": round(_entropy(codes[codes != 0]), 4),
        }
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(decoders + nodes)  # decoders first: the graph stays topologically sorted
    return stats


def _entropy(codes: np.ndarray) -> float:
    if codes.size == 0:
        return 0.0
    p = np.bincount(codes)[1:].astype(np.float64)
    p = p[p > 0] / codes.size
    return float(-(p * np.log2(p)).sum())


def code_entropy_bits(stats: dict[str, dict]) -> float:
    """Bits per non-zero weight over all encoded tensors (the codes' entropy, weighted)."""
    nonzero = sum(s["nonzero"] for s in stats.values())
    return (
        sum(s["code_entropy_bits"] * s["nonzero"] for s in stats.values()) / nonzero
        if nonzero
        else 0.0
    )
