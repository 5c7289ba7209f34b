"""What the variants written by onnxruntime.quantization share: calibration batches, a quiet
quantizer, the finished file, and how their scales and zero points are counted."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from compress.encode.compat import set_ir_version
from compress.encode.onnx_tools import get_metadata, save_model, set_metadata
from compress.variants.base import StoredCount, Variant

# Initializers onnxruntime.quantization adds beside each quantized tensor
# (`<name>_scale`, `<name>_zero_point`): not parameters of the model.
AUX_SUFFIXES = ("_scale", "_zero_point")


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
def quiet_root_logger():
    # The quantizer advises "pre-processing" through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def finish(
    model: onnx.ModelProto,
    source: Path,
    target: Path,
    ir_version: int | None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Give `model` the source's metadata (with `variant` and `extra`) and the lowest IR
    version it allows (or `ir_version`), and save it to `target`."""
    # The quantizer keeps metadata_props on some versions and not on others: set them again.
    metadata = get_metadata(onnx.load(str(source), load_external_data=False))
    metadata["variant"] = target.stem
    metadata.update(extra or {})
    set_metadata(model, metadata)
    # The quantizer stamps its own IR version (or raises the opset, for int4): declare the
    # lowest the result allows, as the export does.
    set_ir_version(model, ir_version)
    save_model(model, target)


class QuantizerVariant(Variant):
    """A variant that onnxruntime.quantization writes: its scales and zero points are auxiliary."""

    # onnxruntime.quantization writes the contrib QuantizeLinear / DequantizeLinear (per-axis
    # int8 before ai.onnx opset 13), in onnxruntime from 1.0; their int4 form is covered by
    # compress.encode.compat.TYPE_NEEDS.
    contrib_ops = {"QuantizeLinear": "1.0", "DequantizeLinear": "1.0"}

    @classmethod
    def count_stored(cls, inits: Mapping[str, onnx.TensorProto], min_dims: int) -> StoredCount:
        return StoredCount(names={name for name in inits if name.endswith(AUX_SUFFIXES)})
