"""Helpers on ONNX files: metadata, zero normalisation, atomic saving, size and sparsity.

Every artifact is one self-contained .onnx file (no external .data file), so its size on
disk is the whole model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compress.encode.frontend import is_frontend_tensor
from compress.errors import IntegrityError
from compress.files import atomic_path, write_bytes

# Initializer types that hold parameters (others are shapes and indices).
_PARAM_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
    onnx.TensorProto.INT32,
}


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


LAYOUTS = {3: "NCHW", 2: "NTF", 1: "NC"}  # input rank without the batch axis -> layout name


def artifact_metadata(
    preprocessing: dict,
    labels: list[str],
    model_name: str,
    variant: str,
    dataset: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, str]:
    """The metadata_props of every artifact (JSON strings), the file's whole contract:

    - `preprocessing`: for images {"scale", "mean": [per channel], "std": [per channel],
      "size": [h, w], "channels", "layout": "NCHW"}: resize to size, then
      input = (pixel * scale - mean[c]) / std[c]; for tables {"features": [names in input
      order], "mean": [...], "std": [...]}: input = (x - mean[f]) / std[f]; for arrays
      {"normalize", "mean", "std" (nested lists broadcasting against one sample),
      "input_shape", "dtype"}: input = (x - mean) / std;
    - `labels`: class names, index = output position;
    - `model`, `variant`, `producer`;
    - `output`: "logits"; with `dataset` and `input_shape`: `dataset`, `layout` ("NCHW" for
      images, "NC" for tables, "NTF" for sequences) and `input_shape` ([null, ...]: any batch size).
    The verify stage adds `accuracy`, `val_accuracy`, `min_onnxruntime` and `sha256`.
    """
    from compress.version import __version__

    metadata = {
        "preprocessing": json.dumps(preprocessing),
        "labels": json.dumps(list(labels)),
        "model": model_name,
        "variant": variant,
        "producer": f"compress {__version__}",
        # The outputs are raw scores: argmax is the class; softmax gives probabilities.
        "output": "logits",
    }
    if dataset is not None:
        metadata["dataset"] = dataset
    if input_shape is not None:
        metadata["layout"] = LAYOUTS.get(len(input_shape), "N" + "x" * len(input_shape))
        metadata["input_shape"] = json.dumps([None, *input_shape])  # None: any batch size
    return metadata


# The file's own checksum in its metadata: the SHA-256 of the serialized file with this
# value written as 64 zeros. Filling the value in changes no other byte (same length), so
# anyone can check it: replace the 64 hex digits by 64 "0" characters and hash the bytes.
CHECKSUM_KEY = "sha256"
_PLACEHOLDER = b"0" * 64


def _checksum_entry(value: bytes) -> bytes:
    # How protobuf writes a StringStringEntryProto {key: "sha256", value: <64 bytes>}.
    key = CHECKSUM_KEY.encode()
    return b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(value)]) + value


def sealed_bytes(model: onnx.ModelProto) -> bytes:
    """The serialized model with metadata `sha256` holding the checksum of these very bytes."""
    set_metadata(model, {CHECKSUM_KEY: _PLACEHOLDER.decode()})
    data = model.SerializeToString()
    entry = _checksum_entry(_PLACEHOLDER)
    at = data.rfind(entry)  # metadata_props are written after the graph: the last match
    if at < 0:
        raise RuntimeError("the checksum entry is not where protobuf writes it")
    digest = hashlib.sha256(data).hexdigest().encode()
    start = at + len(entry) - len(_PLACEHOLDER)
    sealed = data[:start] + digest + data[start + len(digest) :]
    set_metadata(model, {CHECKSUM_KEY: digest.decode()})
    return sealed


def checksum_matches(data: bytes) -> bool:
    """Whether the file's `sha256` metadata is the checksum of its bytes (see CHECKSUM_KEY)."""
    model = onnx.load_from_string(data)
    digest = get_metadata(model).get(CHECKSUM_KEY, "")
    entry = _checksum_entry(digest.encode())
    at = data.rfind(entry)
    if len(digest) != 64 or at < 0:
        return False
    start = at + len(entry) - 64
    blank = data[:start] + _PLACEHOLDER + data[start + 64 :]
    return hashlib.sha256(blank).hexdigest() == digest


def positive_zero_initializers(model: onnx.ModelProto) -> None:
    """Rewrite -0.0 as +0.0 in float initializers: same numbers, fewer distinct bytes."""
    for init in model.graph.initializer:
        if init.data_type in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.FLOAT16,
        ):
            array = numpy_helper.to_array(init)
            if np.signbit(array[array == 0]).any():
                fixed = np.where(array == 0, np.zeros_like(array), array)
                init.CopyFrom(numpy_helper.from_array(fixed, init.name))


def save_model(model: onnx.ModelProto, path: Path, check: bool = True, seal: bool = False) -> None:
    """Check (full, with shape inference) and write a single self-contained file atomically;
    `seal`: with its own checksum in metadata `sha256` (sealed_bytes)."""
    if check:
        onnx.checker.check_model(model, full_check=True)
    if seal:
        write_bytes(path, sealed_bytes(model))
        return
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)


def parameter_counts(model: onnx.ModelProto, weights_only: bool = False) -> tuple[int, int]:
    """(parameters, non-zero parameters) counted in the file's weight and bias initializers;
    `weights_only`: in the weight matrices and kernels alone (2 or more dimensions), biases
    apart: the count behind every `sparsity` compress reports.

    Quantized weights are symmetric (zero point 0), so a pruned weight is a stored 0 in
    every variant.
    """
    # Each variant's encoding knows its own tensors (codes that stand for a weight, scales,
    # zero points): compress.variants, Variant.count_stored.
    from compress.variants.registry import list_variants

    min_dims = 2 if weights_only else 1
    inits = {init.name: init for init in model.graph.initializer}
    params = nonzero = 0
    accounted: set[str] = set()
    for variant in list_variants().values():
        stored = variant.count_stored(inits, min_dims)
        params, nonzero = params + stored.params, nonzero + stored.nonzero
        accounted |= stored.names
    for init in model.graph.initializer:
        if (
            init.name in accounted
            or is_frontend_tensor(init.name)  # fixed transforms of the front end, not learned
            or init.data_type not in _PARAM_TYPES
            or len(init.dims) < min_dims
        ):
            continue
        params += int(np.prod(init.dims))
        nonzero += int(np.count_nonzero(numpy_helper.to_array(init)))
    return params, nonzero


def xz_size(*arrays: np.ndarray) -> int:
    """Bytes of the arrays' raw bytes, one after another, under xz -9: what a choice of
    layout costs in a package (a quick estimate: PACKAGERS' xz tries more settings)."""
    return len(lzma.compress(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), preset=9))


def smaller_walk(
    array: np.ndarray,
    encode: Callable[[np.ndarray], tuple],
    cost: Callable[[tuple], int] | None = None,
) -> tuple[tuple, np.ndarray, bool]:
    """`encode` of the array walked by rows and, for a matrix, by columns: (the encoding that
    costs less, xz_size of its arrays by default, a tie going to rows; the array as walked;
    whether that is the transpose). For a MatMul weight [in, out], the column walk visits
    each output unit's inputs in turn."""
    walks = [(array, False)] + ([(array.T, True)] if array.ndim == 2 else [])
    encoded = [(encode(a.reshape(-1)), a, transposed) for a, transposed in walks]
    return min(encoded, key=lambda e: cost(e[0]) if cost else xz_size(*e[0]))


def _xz(data: bytes) -> bytes:
    # LZMA2 at -9e, default literal context and also none (lc=0, pb=0): quantized weights are
    # nibbles and bytes with little structure across byte boundaries, where the second
    # setting is often a few percent smaller. Both are plain .xz streams.
    settings = [{}, {"lc": 0, "lp": 0, "pb": 0}]
    filters = [
        [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, **s}] for s in settings
    ]
    return min((lzma.compress(data, format=lzma.FORMAT_XZ, filters=f) for f in filters), key=len)


# suffix -> (report key, pack, unpack)
PACKAGERS = {
    ".onnx.gz": (
        "gzip_bytes",
        lambda data: gzip.compress(data, compresslevel=9, mtime=0),
        gzip.decompress,
    ),
    ".onnx.xz": ("xz_bytes", _xz, lzma.decompress),
}


def write_packages(path: Path, out_dir: Path) -> dict:
    """Write `path` as .onnx.gz (gzip -9) and .onnx.xz (xz -9e) into `out_dir`.

    Returns bytes on disk of each form, and the smaller package as the deployable one: what
    a device downloads and unpacks into the very same .onnx file.
    """
    data = path.read_bytes()
    sizes: dict = {"bytes": len(data)}
    for suffix, (key, pack, unpack) in PACKAGERS.items():
        packed = pack(data)
        if unpack(packed) != data:  # a package must unpack to the identical file
            raise IntegrityError(f"{suffix} package of {path} does not unpack to the same file")
        write_bytes(out_dir / f"{path.stem}{suffix}", packed)
        sizes[key] = len(packed)
    form = min(PACKAGERS, key=lambda suffix: sizes[PACKAGERS[suffix][0]])
    sizes["deploy_form"] = form
    sizes["deploy_bytes"] = sizes[PACKAGERS[form][0]]
    sizes["deploy_path"] = str(Path(out_dir.name) / f"{path.stem}{form}")
    return sizes


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm(A, W, b) with a constant W as MatMul(A, W^T) + b; returns how many.

    Same arithmetic, two gains: the weight is stored [in, out], so an input that pruning
    cut off entirely (a dead pixel) is one contiguous run of zeros, which compresses far
    better; and every onnxruntime quantizer handles MatMul per channel.
    """
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    rewritten = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = inits[node.input[1]]
        if attrs.get("transB", 0):
            transposed = numpy_helper.to_array(weight).T.copy()
            weight.CopyFrom(numpy_helper.from_array(transposed, weight.name))
        product = f"{node.output[0]}_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(
            onnx.helper.make_node(
                "MatMul", [node.input[0], node.input[1]], [product], name=f"{node.name}_matmul"
            )
        )
        if len(node.input) > 2 and node.input[2]:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"
                )
            )
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # Shapes recorded for the old layout would contradict the new one: let inference redo them.
    kept = [v for v in model.graph.value_info if v.name not in inits]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return rewritten


def _short_id(index: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "ba", ...: a name of a letter or two."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = letters[index % 26]
    while index >= 26:
        index = index // 26 - 1
        name = letters[index % 26] + name
    return name


def compact_names(model: onnx.ModelProto) -> None:
    """Give every value inside the graph a short name, in place; for the encodings whose file
    size is the point (packed, codebook).

    The graph's inputs and outputs keep their names. An initializer keeps its last
    `.suffix` (what parameter_counts reads it by: `.codes`, `.cb`, `.scale16`, ...) after a
    short id that stands for the rest, so the parts of one tensor still share a base. Node
    names, value_info, doc strings and the exporter's per-value notes go.
    """
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        return  # values of a subgraph may refer to the outer graph's names: leave them all
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    # an audio front end's constants keep their names: they tell its nodes (encode.frontend)
    kept |= {i.name for i in graph.initializer if is_frontend_tensor(i.name)}
    ids: dict[str, str] = {}

    def short(key: str) -> str:
        if key not in ids:
            ids[key] = _short_id(len(ids))
        return ids[key]

    renamed: dict[str, str] = {}
    for init in graph.initializer:
        if init.name in kept:
            continue
        base, dot, suffix = init.name.rpartition(".")
        renamed[init.name] = (
            f"{short('base:' + base)}.{suffix}" if dot else short("value:" + init.name)
        )
    for node in graph.node:
        for name in list(node.input) + list(node.output):
            if name not in kept and name not in renamed:
                renamed[name] = short("value:" + name)
    for init in graph.initializer:
        init.name = renamed.get(init.name, init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        del node.metadata_props[:]
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renamed.get(name, name)
    del graph.value_info[:]
    for value in list(graph.input) + list(graph.output):
        value.doc_string = ""
        del value.metadata_props[:]


def make_session(model: str | Path | onnx.ModelProto, threads: int):
    """An onnxruntime CPU session as every timing in compress opens one (verify, the int8
    layer timings): `threads` intra-op threads, one inter-op thread, warnings off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
