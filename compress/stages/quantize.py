"""Quantize stage: int8 (and int4) variants of an exported float model, with onnxruntime.

Files go to the stage folder (`quantize/<name>.onnx`); verify writes the final artifacts.

    dynamic      -> <source>-int8-dynamic.onnx  quantize_dynamic: int8 weights, activations at run time
    static       -> <source>-int8-static.onnx   quantize_static: QDQ, int8 weights and activations
    static-int4  -> <source>-int4-static.onnx   quantize_static: QDQ, 4-bit weights, int8 activations
    packed-int4  -> <source>-int4-packed.onnx   static-int4's codes stored packed (compress/encode/packed.py)
    codebook     -> <source>-codebook.onnx      the weight-shared model as codes + codebooks,
                                                rebuilt at load (compress.encode.codebook)

Static variants are calibrated on the first `calibration_samples` training images (the
same ones every run) and quantize weights per output channel by default. Weights are
symmetric, so a pruned weight stays an exact stored zero.

The dynamic variant quantizes only `dynamic_op_types` (MatMul and Gemm by default):
onnxruntime's dynamic int8 convolution is slower than its float one at batch 1, so a
dynamic variant of a CNN keeps its convolutions float.

packed-int4 is the smallest file and runs at dense speed: each weight's non-zero positions
and 4-bit codes, rebuilt into a dense float weight by ops onnxruntime folds when the
session is created (with graph optimizations disabled the rebuild runs on every call).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from compress.config import QuantizeConfig
from compress.encode.codebook import code_entropy_bits, encode_codebook
from compress.encode.compat import set_ir_version
from compress.encode.inputs import take_used
from compress.encode.onnx_tools import compact_names, get_metadata, save_model, set_metadata
from compress.encode.packed import ENCODING_NOTE, PackOptions, pack_model
from compress.errors import CompressError, ExportError
from compress.stages.context import StageContext

log = logging.getLogger(__name__)

VARIANT_SUFFIX = {
    "dynamic": "int8-dynamic", "static": "int8-static", "static-int4": "int4-static", "packed-int4": "int4-packed",
    "codebook": "codebook",
}
CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def variant_name(source: str, variant: str) -> str:
    return f"{source}-{VARIANT_SUFFIX[variant]}"


class ArrayReader(CalibrationDataReader):
    """Feeds calibration batches of an in-memory array to onnxruntime's calibrator."""

    def __init__(self, images: np.ndarray, input_name: str = "input", batch_size: int = 64):
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.input_name = input_name
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self):
        self.position = 0


@contextlib.contextmanager
def _quiet_root_logger():
    # The quantizer advises "pre-processing" through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_file(
    source: Path, target: Path, variant: str, config: QuantizeConfig, calibration: np.ndarray | None,
    int4_static: Path | None = None,
    ir_version: int | None = None,
) -> None:
    """Write the `variant` of the float model at `source` to `target` (metadata kept).

    packed-int4 packs `int4_static` (the static-int4 file of the same source) when given,
    else quantizes the source that way first.
    """
    if variant == "codebook":
        write_codebook(source, target)
        return
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        out = Path(tmp) / "model.onnx"
        if variant == "packed-int4" and int4_static is not None:
            out = int4_static
        elif variant == "dynamic":
            quantize_dynamic(
                source, out, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                op_types_to_quantize=list(config.dynamic_op_types),
            )
        else:
            quantize_static(
                source, out, ArrayReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                weight_type=QuantType.QInt8 if variant == "static" else QuantType.QInt4,
                activation_type=QuantType.QUInt8,
                calibrate_method=CALIBRATION[config.calibration_method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        model = onnx.load(str(out))
    metadata_extra = {}
    if variant == "packed-int4":
        options = PackOptions(
            scales=config.packed.scales, activations=config.packed.activations, linear=config.packed.linear
        )
        model = pack_model(model, onnx.load(str(source)), options)
        compact_names(model)
        metadata_extra["encoding"] = ENCODING_NOTE
    # The quantizer keeps metadata_props on some versions and not on others: set them again.
    metadata = get_metadata(onnx.load(str(source), load_external_data=False))
    metadata["variant"] = target.stem
    metadata.update(metadata_extra)
    set_metadata(model, metadata)
    # The quantizer stamps its own IR version (or raises the opset, for int4): declare the
    # lowest the result allows, as the export does.
    set_ir_version(model, ir_version)
    save_model(model, target)


def write_codebook(source: Path, target: Path) -> dict:
    """The float model with every weight-shared tensor as codes + codebook (exactly the same weights)."""
    model = onnx.load(str(source))
    stats = encode_codebook(model)
    compact_names(model)
    if not stats:
        raise CompressError(
            f"{source.name} has no weight-shared tensor (at most 255 distinct values) to store as a "
            "codebook: set [finetune] share.bits"
        )
    metadata = get_metadata(model)
    metadata["variant"] = target.stem
    metadata["encoding"] = (
        "codebook: weights rebuilt from codes at session creation (onnxruntime graph optimizations, "
        "its default, fold it); with optimizations disabled the decode runs on every call"
    )
    metadata["code_entropy_bits"] = f"{code_entropy_bits(stats):.4f}"
    set_metadata(model, metadata)
    save_model(model, target)
    return stats


def run(ctx: StageContext) -> dict:
    config = ctx.config.quantize
    source = ctx.input("export", f"{config.source}.onnx")
    calibration = None
    if not source.is_file():  # pruned-inputs: export found no first layer reading the input
        raise ExportError(f"quantize.source = {config.source!r}: {source.name} was not exported "
                          "(no Linear or Conv reads the model's input directly)")
    if any(v != "dynamic" for v in config.variants):
        images, _ = ctx.data.tensors("train", limit=config.calibration_samples)
        calibration = images.numpy().astype(np.float32)
        used = get_metadata(onnx.load(str(source), load_external_data=False)).get("inputs")
        if used:  # a file that takes only the used inputs is calibrated on those
            calibration = take_used(calibration, json.loads(used))
    metrics = {}
    written: dict[str, Path] = {}
    # static-int4 first: packed-int4 packs its very codes and scales.
    for variant in sorted(config.variants, key=lambda v: v != "static-int4"):
        name = variant_name(config.source, variant)
        target = ctx.output(f"{name}.onnx")
        started = time.perf_counter()
        quantize_file(source, target, variant, config, calibration, written.get("static-int4"),
                      ctx.config.export.ir_version)
        written[variant] = target
        metrics[name] = {"path": str(target.relative_to(ctx.run_dir)), "bytes": target.stat().st_size}
        log.info("quantized %s -> %s (%d bytes) in %.1fs", source.name, target.name, target.stat().st_size,
                 time.perf_counter() - started)
    return metrics
