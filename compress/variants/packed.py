"""`packed-int4` -> <source>-int4-packed.onnx: static-int4's very codes and scales stored as
non-zero positions + codes (compress.encode.packed), rebuilt into dense float weights by ops
onnxruntime folds when the session is created: the smallest file, at dense speed (with
graph optimizations disabled the rebuild runs on every call). [quantize] packed sets how
(PackedConfig: scales, activations, linear).

`packed` -> <source>-packed.onnx: the same encoding at each layer's width, 2 to 8 bits
([quantize] bits), float activations:

    [quantize]
    variants = ["packed"]
    bits = { default = 4, "features.0" = 8, "classifier.1" = 2 }   # or 4, or "auto"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compress.bits import widths_for
from compress.encode.onnx_tools import compact_names
from compress.encode.packed import (
    ENCODING_NOTE,
    PackOptions,
    layer_weights,
    pack_model,
    qdq_of,
    unpack_bits,
)
from compress.errors import CompressError
from compress.variants.base import StoredCount, Variant, VariantContext
from compress.variants.quantizer import finish
from compress.variants.registry import register_variant

# The parts of a packed weight `<w>` (compress.encode.packed): `.codes` stands for the whole
# weight, whose shape is `.shape`; its gaps, scales and zero points are auxiliary.
CODES, SHAPE = ".codes", ".shape"
AUX_SUFFIXES = (".scale", ".scale16", ".zp", ".steps")
# A bit stream's parts, and the constants every stream's decode shares.
BITS_SUFFIXES = (".bitlen", ".qbits", ".qshape", ".shifts", ".bit", ".powers", ".rows", ".qmin")


@register_variant
class PackedInt4(Variant):
    name = "packed-int4"
    suffix = "int4-packed"
    order = 40
    needs = ("static-int4",)
    section = "packed"
    color = "tab:purple"
    # With linear = "matmulnbits" its files hold com.microsoft.MatMulNBits, whose first
    # release has not been checked here: such a file is taken to need the verifying release.

    @classmethod
    def count_stored(cls, inits: Mapping[str, onnx.TensorProto], min_dims: int) -> StoredCount:
        # Both packed variants' files: `packed` writes the same tensors, bit streams besides.
        suffixes = (CODES, *AUX_SUFFIXES, *BITS_SUFFIXES)
        found = StoredCount(names={name for name in inits if name.endswith(suffixes)})
        for name in inits:
            if name.endswith(CODES):  # the non-zero codes (and zero fillers) of a flat stream
                base = name.removesuffix(CODES)
                shape = numpy_helper.to_array(inits[base + SHAPE])
                entries = int(np.prod(inits[base + ".steps"].dims))
                codes = _codes(inits, base, CODES, entries)
            elif name.endswith(".qbits"):  # a weight stored whole as a bit stream
                base = name.removesuffix(".qbits")
                shape = numpy_helper.to_array(inits[base + ".qshape"])
                codes = _codes(inits, base, ".qbits", int(np.prod(shape)))
            else:
                continue
            if len(shape) >= min_dims:
                found.params += int(np.prod(shape))
                found.nonzero += int(np.count_nonzero(codes))
        return found

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        packed = context.config.packed
        options = PackOptions(
            scales=packed.scales, activations=packed.activations, linear=packed.linear
        )
        model = pack_model(
            onnx.load(str(context.inputs["static-int4"])), onnx.load(str(source)), options
        )
        compact_names(model)
        finish(model, source, target, context.ir_version, {"encoding": ENCODING_NOTE})


def _codes(inits: Mapping[str, onnx.TensorProto], base: str, suffix: str, count: int) -> np.ndarray:
    """The `count` codes stored under `base + suffix`, in their own type or as a bit stream."""
    stored = numpy_helper.to_array(inits[base + suffix])
    if base + ".bitlen" not in inits:
        return stored
    bits = int(numpy_helper.to_array(inits[base + ".bitlen"])[0]) // count
    return unpack_bits(stored, count, bits)


@register_variant
class Packed(Variant):
    """`packed` -> <source>-packed.onnx: packed-int4's encoding at each layer's own width
    ([quantize] bits: 2 to 8, one for all or per layer, or chosen on validation with
    "auto"), the codes computed as fake quantization computes them (compress.qat), so a
    model fine-tuned with qat_bits at the same widths holds these very weights. Its tensors
    are counted by PackedInt4.count_stored (the same encoding)."""

    name = "packed"
    suffix = "packed"
    order = 45
    section = "packed"
    color = "tab:brown"

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        packed = context.config.packed
        if packed.activations != "float" or packed.linear != "float":
            raise CompressError(
                "quantize variant 'packed' rebuilds float weights into the float graph: it "
                "takes [quantize] packed activations = 'float' and linear = 'float'"
            )
        model = onnx.load(str(source))
        widths = context.widths or layer_widths(model, context.config.bits)
        weights = layer_weights(model)
        by_weight = {weights[layer][0]: bits for layer, bits in widths.items()}
        options = PackOptions(scales=packed.scales, widths=by_weight)
        out = pack_model(qdq_of(model, by_weight, packed.scales), model, options)
        if packed.scales == "float16":
            half_biases(out, [f"{layer}.bias" for layer in weights])
        compact_names(out)
        extra = {"encoding": ENCODING_NOTE, "bits": json.dumps(widths)}
        finish(out, source, target, context.ir_version, extra)


def half_biases(model: onnx.ModelProto, names: list[str]) -> None:
    """Store the named float32 biases as float16, cast back by a node onnxruntime folds: with
    float16 scales (the weights already rounded so), a bias costs half. packed-int4's biases
    are static-int4's integer codes instead."""
    graph = model.graph
    for init in graph.initializer:
        if init.name in names and init.data_type == onnx.TensorProto.FLOAT:
            half = numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), f"{init.name}16"
            )
            cast = onnx.helper.make_node(
                "Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT
            )
            init.CopyFrom(half)
            graph.node.insert(0, cast)


def layer_widths(model: onnx.ModelProto, bits) -> dict[str, int]:
    """Each layer of the float model -> its width by [quantize] bits (a number or a table)."""
    if bits == "auto":
        raise CompressError("quantize.bits = 'auto': the quantize stage chooses the widths")
    return widths_for(bits, layer_weights(model), "quantize.bits")
