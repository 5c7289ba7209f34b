"""`packed-int4` -> <source>-int4-packed.onnx: static-int4's very codes and scales stored as
non-zero positions + codes (compress.encode.packed), rebuilt into dense float weights by ops
onnxruntime folds when the session is created: the smallest file, at dense speed (with
graph optimizations disabled the rebuild runs on every call). [quantize] packed sets how
(PackedConfig: scales, activations, linear).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compress.encode.onnx_tools import compact_names
from compress.encode.packed import ENCODING_NOTE, PackOptions, pack_model
from compress.variants.base import StoredCount, Variant, VariantContext
from compress.variants.quantizer import finish
from compress.variants.registry import register_variant

# The parts of a packed weight `<w>` (compress.encode.packed): `.codes` stands for the whole
# weight, whose shape is `.shape`; its gaps, scales and zero points are auxiliary.
CODES, SHAPE = ".codes", ".shape"
AUX_SUFFIXES = (".scale", ".scale16", ".zp", ".steps")


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
        found = StoredCount(names={name for name in inits if name.endswith((CODES, *AUX_SUFFIXES))})
        for name in inits:
            if name.endswith(CODES):  # the non-zero codes (and zero fillers) of a flat stream
                shape = numpy_helper.to_array(inits[name.removesuffix(CODES) + SHAPE])
                if len(shape) >= min_dims:
                    found.params += int(np.prod(shape))
                    found.nonzero += int(np.count_nonzero(numpy_helper.to_array(inits[name])))
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
