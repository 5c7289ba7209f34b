"""`static` -> <source>-int8-static.onnx and `static-int4` -> <source>-int4-static.onnx:
onnxruntime's quantize_static, QDQ, int8 activations and int8 or 4-bit weights (int4:
onnxruntime >= 1.20 to write, 1.19 to run).

Calibrated on context.calibration (the quantize stage passes the first
`calibration_samples` training inputs: the same ones every run); weights per output channel
by default. Weights are symmetric, so a pruned weight stays an exact stored zero.

With [quantize] static_layers = "faster", each Conv / MatMul / Gemm is first timed alone in
float and in int8 on this machine (compress.variants.layer_timing) and only those whose int8
form is clearly faster are quantized; the whole file is then timed against the float model
and against int8 on all layers, and gives way to whichever is clearly faster. The tables go
into the file's `int8_layers` and `int8_check` metadata.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from compress.config import QuantizeConfig
from compress.encode.frontend import frontend_node_names
from compress.errors import CompressError
from compress.variants.base import VariantContext
from compress.variants.layer_timing import (
    choose,
    float_nodes,
    layer_line,
    time_layers,
    time_models,
)
from compress.variants.quantizer import ArrayReader, QuantizerVariant, finish, quiet_root_logger
from compress.variants.registry import register_variant

CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}

log = logging.getLogger(__name__)


class StaticVariant(QuantizerVariant):
    calibrated = True
    weight_type: ClassVar[QuantType]

    def write(self, source: Path, target: Path, context: VariantContext) -> None:
        if context.calibration is None:
            raise CompressError(f"quantize variant {self.name!r} needs calibration inputs")
        model = onnx.load(str(source))
        frontend = frontend_node_names(model)
        if context.config.static_layers == "all":
            finish(self.quantize(source, context, frontend), source, target, context.ir_version)
            return
        rows = time_layers(model, self._quantize_layer(context.config), context.threads, frontend)
        log.info("%s: %s", target.stem, layer_line(rows))
        files = {
            "faster": self.quantize(source, context, float_nodes(model, rows, frontend)),
            "all": self.quantize(source, context, frontend),
        }
        check = time_models([model, *files.values()], context.calibration, context.threads)
        check["kept"] = choose(check)
        if check["kept"] != "faster":
            log.info(
                "%s: the whole file with int8 on the faster layers runs %.2fx float, on all "
                "%.2fx: keeping %s",
                target.stem,
                check["faster"]["ratio"],
                check["all"]["ratio"],
                {"all": "int8 on all layers", "none": "the float graph"}[check["kept"]],
            )
            # `quantized`: as the file holds it; `faster_alone`: the layer's own verdict
            every = check["kept"] == "all"
            rows = [{**row, "faster_alone": row["quantized"], "quantized": every} for row in rows]
        kept = files.get(check["kept"])
        if kept is None:  # every layer float
            kept = self.quantize(source, context, float_nodes(model, rows, frontend))
        # the evidence, for the report: each layer's timing, and the whole files'
        extra = {"int8_layers": json.dumps(rows), "int8_check": json.dumps(check)}
        finish(kept, source, target, context.ir_version, extra)

    def quantize(
        self, source: Path, context: VariantContext, exclude: list[str] | None = None
    ) -> onnx.ModelProto:
        """The QDQ model as onnxruntime.quantization writes it, calibrated on
        context.calibration; the nodes in `exclude` (default: the front end's) stay float."""
        if context.calibration is None:
            raise CompressError(f"quantize variant {self.name!r} needs calibration inputs")
        if exclude is None:
            exclude = frontend_node_names(onnx.load(str(source)))
        return self._quantize(source, context.config, ArrayReader(context.calibration), exclude)

    def _quantize(
        self, source: Path, config: QuantizeConfig, reader: ArrayReader, exclude: list[str]
    ) -> onnx.ModelProto:
        with tempfile.TemporaryDirectory() as tmp, quiet_root_logger():
            out = Path(tmp) / "model.onnx"
            quantize_static(
                source,
                out,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                weight_type=self.weight_type,
                activation_type=QuantType.QUInt8,
                calibrate_method=CALIBRATION[config.calibration_method],
                nodes_to_exclude=exclude,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
            return onnx.load(str(out))

    def _quantize_layer(self, config: QuantizeConfig):
        """One-node model, its calibration inputs -> the node as this variant writes it (for
        compress.variants.layer_timing)."""

        def quantize(single: onnx.ModelProto, samples: np.ndarray) -> onnx.ModelProto:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "layer.onnx"
                onnx.save(single, str(path))
                reader = ArrayReader(samples, single.graph.input[0].name)
                return self._quantize(path, config, reader, [])

        return quantize


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
