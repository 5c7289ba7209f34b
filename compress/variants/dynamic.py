"""`dynamic` -> <source>-int8-dynamic.onnx: onnxruntime's quantize_dynamic, int8 weights,
activations quantized at run time.

It quantizes only [quantize] `dynamic_op_types` (MatMul and Gemm by default):
onnxruntime's dynamic int8 convolution is slower than its float one at batch 1, so a
dynamic variant of a CNN keeps its convolutions float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from compress.encode.frontend import frontend_node_names
from compress.variants.base import VariantContext
from compress.variants.quantizer import QuantizerVariant, finish, quiet_root_logger
from compress.variants.registry import register_variant

# quantize_dynamic writes ConvInteger with int8 weights; onnxruntime 1.15 to 1.23 have
# ConvInteger for uint8 weights only ("Could not find an implementation for ConvInteger(10)")
# and 1.24 runs it, checked by loading a dynamic-int8 LeNet-5 in each.
CONV_INTEGER_INT8 = "1.24"


@register_variant
class Dynamic(QuantizerVariant):
    name = "dynamic"
    suffix = "int8-dynamic"
    order = 10
    kernel_needs = {("ConvInteger", onnx.TensorProto.INT8): CONV_INTEGER_INT8}
    color = "tab:orange"

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        config = context.config
        with tempfile.TemporaryDirectory() as tmp, quiet_root_logger():
            out = Path(tmp) / "model.onnx"
            quantize_dynamic(
                source,
                out,
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                op_types_to_quantize=list(config.dynamic_op_types),
                nodes_to_exclude=frontend_node_names(onnx.load(str(source))),
            )
            model = onnx.load(str(out))
        finish(model, source, target, context.ir_version)
