"""`static` -> <source>-int8-static.onnx and `static-int4` -> <source>-int4-static.onnx:
onnxruntime's quantize_static, QDQ, int8 activations and int8 or 4-bit weights (int4:
onnxruntime >= 1.20 to write, 1.19 to run).

Calibrated on context.calibration (the quantize stage passes the first
`calibration_samples` training inputs: the same ones every run); weights per output channel
by default. Weights are symmetric, so a pruned weight stays an exact stored zero.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from compress.encode.frontend import frontend_node_names
from compress.errors import CompressError
from compress.variants.base import VariantContext
from compress.variants.quantizer import ArrayReader, QuantizerVariant, finish, quiet_root_logger
from compress.variants.registry import register_variant

CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class StaticVariant(QuantizerVariant):
    calibrated = True
    weight_type: ClassVar[QuantType]

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        finish(self.quantize(source, context), source, target, context.ir_version)

    def quantize(self, source: Path, context: VariantContext) -> onnx.ModelProto:
        """The QDQ model as onnxruntime.quantization writes it."""
        config = context.config
        if context.calibration is None:
            raise CompressError(f"quantize variant {self.name!r} needs calibration inputs")
        with tempfile.TemporaryDirectory() as tmp, quiet_root_logger():
            out = Path(tmp) / "model.onnx"
            quantize_static(
                source,
                out,
                ArrayReader(context.calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                weight_type=self.weight_type,
                activation_type=QuantType.QUInt8,
                calibrate_method=CALIBRATION[config.calibration_method],
                nodes_to_exclude=frontend_node_names(onnx.load(str(source))),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
            return onnx.load(str(out))


@register_variant
class Static(StaticVariant):
    name = "static"
    suffix = "int8-static"
    order = 20
    weight_type = QuantType.QInt8


@register_variant
class StaticInt4(StaticVariant):
    name = "static-int4"
    suffix = "int4-static"
    order = 30
    weight_type = QuantType.QInt4
    color = "tab:purple"
