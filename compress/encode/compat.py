"""Which onnxruntime loads an ONNX file: its declared IR version and opsets against
onnxruntime's documented compatibility table.

    lowest_ir_version(model)        # 8 for an opset-17 float model, 10 once it holds int4
    set_ir_version(model, None)     # declare that lowest version (or a higher one asked for)
    min_onnxruntime(model)          # "1.12": the oldest release that loads it

An exporter or quantizer stamps the newest IR version its own onnx package knows (IR 10 and
up), which onnxruntime 1.17 and older refuse although nothing in the file needs it. The IR
version a file needs follows from the opsets it imports and the tensor types it holds
(ONNX's own table, onnx.helper.VERSION_TABLE), so it is set to that.
"""

from __future__ import annotations

import onnx

# onnxruntime release -> (newest ai.onnx opset, newest ai.onnx.ml opset, newest IR version) it
# implements. Source: onnxruntime's compatibility table, "ONNX Runtime compatibility",
# https://onnxruntime.ai/docs/reference/compatibility.html (docs/Versioning.md in the
# onnxruntime repository for releases before 1.9). Oldest first.
ORT_RELEASES: tuple[tuple[str, int, int, int], ...] = (
    ("1.6", 13, 2, 7),
    ("1.7", 13, 2, 7),
    ("1.8", 14, 2, 7),
    ("1.9", 15, 2, 8),
    ("1.10", 15, 2, 8),
    ("1.11", 16, 2, 8),
    ("1.12", 17, 3, 8),
    ("1.13", 17, 3, 8),
    ("1.14", 18, 3, 8),
    ("1.15", 19, 3, 9),
    ("1.16", 19, 3, 9),
    ("1.17", 20, 4, 9),
    ("1.18", 21, 4, 10),
    ("1.19", 21, 4, 10),
    ("1.20", 21, 4, 10),
    ("1.21", 22, 4, 10),
    ("1.22", 23, 5, 11),
)

# Tensor types newer than the opsets that use them: the IR version that introduced the
# type (ONNX IR.md) and the first onnxruntime with kernels for it. 4-bit integers came with
# ONNX 1.16 (IR 10); onnxruntime 1.18 loads IR 10 but refuses tensor(int4) in the
# DequantizeLinear that onnxruntime.quantization writes below opset 21, and 1.19 runs it
# (both checked by loading a static-int4 file in each). int8 and uint8 need nothing beyond
# their opset.
TYPE_NEEDS: dict[int, tuple[int, str]] = {
    onnx.TensorProto.INT4: (10, "1.19"),
    onnx.TensorProto.UINT4: (10, "1.19"),
    onnx.TensorProto.FLOAT8E4M3FN: (9, "1.16"),
    onnx.TensorProto.FLOAT8E4M3FNUZ: (9, "1.16"),
    onnx.TensorProto.FLOAT8E5M2: (9, "1.16"),
    onnx.TensorProto.FLOAT8E5M2FNUZ: (9, "1.16"),
}

# com.microsoft operators (onnxruntime's own, outside the ONNX opsets) and kernels that came
# later than their opset are what a variant writes: each variant declares its own
# (compress.variants, Variant.contrib_ops and .kernel_needs). A contrib operator no variant
# lists is taken to need the onnxruntime release that verified the file.
CONTRIB_DOMAIN = "com.microsoft"


def contrib_ops() -> dict[str, str]:
    """com.microsoft operator -> the first onnxruntime with it, over every variant."""
    return _declared("contrib_ops")


def kernel_needs() -> dict[tuple[str, int], str]:
    """(operator, type of its weight input) -> the first onnxruntime with that kernel."""
    return _declared("kernel_needs")


def _declared(attribute: str) -> dict:
    from compress.variants.registry import list_variants

    table: dict = {}
    for variant in list_variants().values():
        for key, release in getattr(variant, attribute).items():
            table[key] = newest(release, table.get(key, release))
    return table


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def newest(*versions: str) -> str:
    return max(versions, key=_version_key)


def _initializer_types(model: onnx.ModelProto) -> set[int]:
    types = {init.data_type for init in model.graph.initializer}
    for node in model.graph.node:  # Constant nodes may hold typed tensors too
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                types.add(attr.t.data_type)
    return types


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Domain ("" for ai.onnx) -> imported opset version."""
    return {o.domain or "ai.onnx": o.version for o in model.opset_import}


def lowest_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version valid for the file's opsets and tensor types."""
    known = [o for o in model.opset_import if o.domain in ("", "ai.onnx", "ai.onnx.ml")]
    ir = onnx.helper.find_min_ir_version_for(known, ignore_unknown=True) if known else 3
    for data_type in _initializer_types(model):
        if data_type in TYPE_NEEDS:
            ir = max(ir, TYPE_NEEDS[data_type][0])
    return ir


def set_ir_version(model: onnx.ModelProto, wanted: int | None = None) -> int:
    """Declare `wanted` (None: the lowest valid), or the lowest valid if `wanted` is lower."""
    ir = max(lowest_ir_version(model), wanted or 0)
    model.ir_version = ir
    return ir


def min_onnxruntime(model: onnx.ModelProto, verified_with: str | None = None) -> str:
    """The oldest onnxruntime release (major.minor) that loads and runs the file."""
    if verified_with is None:
        import onnxruntime

        verified_with = onnxruntime.__version__
    verified_with = ".".join(verified_with.split(".")[:2])
    needs = [_first_release(lambda r: r[3] >= model.ir_version, verified_with)]
    for domain, version in opsets(model).items():
        if domain == "ai.onnx":
            needs.append(_first_release(lambda r, v=version: r[1] >= v, verified_with))
        elif domain == "ai.onnx.ml":
            needs.append(_first_release(lambda r, v=version: r[2] >= v, verified_with))
    needs += [TYPE_NEEDS[t][1] for t in _initializer_types(model) if t in TYPE_NEEDS]
    types = {init.name: init.data_type for init in model.graph.initializer}
    contrib, kernels = contrib_ops(), kernel_needs()
    for node in model.graph.node:
        if node.domain == CONTRIB_DOMAIN:
            needs.append(contrib.get(node.op_type, verified_with))
        weight_type = types.get(node.input[1]) if len(node.input) > 1 else None
        if (node.op_type, weight_type) in kernels:
            needs.append(kernels[(node.op_type, weight_type)])
    return newest(*needs)


def _first_release(fits, fallback: str) -> str:
    return next(
        (release for release, *versions in ORT_RELEASES if fits((release, *versions))), fallback
    )
