"""Export stage: the trained (dense) and the pruned, fine-tuned model to ONNX.

Outputs `dense.onnx` and `pruned.onnx` in the run folder. With `[export] shrink = true` the
pruned model's dead units and channels are removed first (compress.shrink, exact), and the
units of each layer before and after are in the stage's metrics. Each is exported with
torch.onnx's dynamo exporter into a single self-contained file, with a dynamic batch axis,
Gemm rewritten as MatMul + Add with [in, out] weights (compresses better), -0.0 as +0.0, and metadata_props `preprocessing` (input = (pixel * scale - mean)
/ std for raw 0-255 pixels) and `labels` (class names), so the file alone is enough to use it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint
from compress.encode.onnx_tools import (
    artifact_metadata,
    gemm_to_matmul,
    positive_zero_initializers,
    save_model,
    set_metadata,
)
from compress.pruning.shrink import shrink
from compress.stages.context import StageContext

log = logging.getLogger(__name__)
ARTIFACTS = {"dense": "train", "pruned": "finetune"}  # artifact name -> stage whose model it is


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int, metadata: dict[str, str]
) -> None:
    model = model.eval().cpu()
    example = (torch.zeros(1, *input_shape),)
    batch = torch.export.Dim("batch", min=1)
    # The exporter prints its progress on stdout.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, example, dynamo=True, external_data=False, opset_version=opset,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False,
        )
    proto: onnx.ModelProto = program.model_proto
    gemm_to_matmul(proto)
    positive_zero_initializers(proto)
    set_metadata(proto, metadata)
    save_model(proto, path)


def run(ctx: StageContext) -> dict:
    data = ctx.data
    metrics = {}
    for artifact, stage in ARTIFACTS.items():
        model, _, spec = load_checkpoint(ctx.input(stage, "model.pt"))
        shrunk = shrink(model, data.input_shape) if artifact == "pruned" and ctx.config.export.shrink else None
        path = ctx.output(f"{artifact}.onnx", in_run_dir=True)
        metadata = artifact_metadata(
            data.preprocessing, list(data.classes), spec.get("name") or spec["class"], artifact
        )
        export_onnx(model, data.input_shape, path, ctx.config.export.opset, metadata)
        metrics[artifact] = {"path": path.name, "bytes": path.stat().st_size}
        if shrunk is not None:
            metrics[artifact]["shrink"] = shrunk
        log.info("exported %s (%d bytes)", path, path.stat().st_size)
    return metrics
