"""Export stage: the trained (dense) and the pruned, fine-tuned model to ONNX.

Outputs `export/dense.onnx` and `export/pruned.onnx` (the verify stage writes the final
artifacts into the run folder). With `[export] shrink = true` the
pruned model's dead units and channels are removed first (compress.pruning.shrink, exact), and the
units of each layer before and after are in the stage's metrics. Each is exported with
torch.onnx's dynamo exporter into a single self-contained file, with a dynamic batch axis,
Gemm rewritten as MatMul + Add with [in, out] weights (compresses better), -0.0 as +0.0, a
sound model's front end ahead of it (compress.data.features: the artifact takes the
waveform; its DFT, mel and DCT matrices computed in the graph, compress.encode.frontend), and
metadata_props `preprocessing` (the data set's: compress.encode.onnx_tools.artifact_metadata)
and `labels` (class names), so the file alone is enough to use it.
The file declares the `[export] opset` and the lowest IR version that opset allows
(compress.encode.compat), so the oldest onnxruntime that implements the opset loads it.

The dense model's export depends on the train stage alone, so run folders that share a
stage cache (the variants of a sweep) export it once (StageContext.shared).

It also tells which inputs the pruned model still reads (compress.encode.inputs): the
metrics' `inputs`, `inputs.png` (images read by a Linear first layer: the pixels still
used) and, with `[export] drop_unused_inputs`, `pruned-inputs.onnx`, which takes only those.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint
from compress.data.features import WithFrontEnd
from compress.encode.compat import opsets, set_ir_version
from compress.encode.frontend import generate_constants
from compress.encode.inputs import input_usage, plot_usage, reduced_model
from compress.encode.onnx_tools import (
    artifact_metadata,
    gemm_to_matmul,
    positive_zero_initializers,
    save_model,
    set_metadata,
)
from compress.errors import ExportError
from compress.files import sha256_file
from compress.pruning.shrink import shrink
from compress.results import DENSE, PRUNED
from compress.stages.context import StageContext

log = logging.getLogger(__name__)
ARTIFACTS = {DENSE: "train", PRUNED: "finetune"}  # artifact name -> stage whose model it is
REDUCED = "pruned-inputs"  # the pruned model on its used inputs only ([export] drop_unused_inputs)
DENSE_EXPORT = (
    "dense-export"  # the dense model's export, shared by run folders (StageContext.shared)
)


@contextlib.contextmanager
def _quiet_exporter():
    # The exporter prints its progress on stdout, logs a warning below opset 18 that it
    # converts its opset-18 graph down (export_onnx checks the result instead), and logs
    # whole graphs when it fails (check_exportable says why in one line).
    logging.disable(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    """The model as an ONNX graph with a dynamic batch axis (torch.onnx's dynamo exporter)."""
    model = model.eval().cpu()
    example = (torch.zeros(1, *input_shape),)
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            external_data=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto


def check_exportable(model: nn.Module, input_shape: tuple[int, ...], opset: int) -> None:
    """Export `model` (untrained is fine) in memory; a model torch cannot export is a
    ExportError now, in seconds, rather than a traceback after training."""
    try:
        to_onnx(model, input_shape, opset)
    except Exception as exc:
        text = str(exc)
        if "data-dependent" in text.lower() or "GuardOnDataDependent" in text:
            reason = (
                "its forward() branches on the values of a tensor (data-dependent control flow), "
                "which an ONNX graph cannot hold; use torch.where or torch.cond instead of "
                "if/while on tensor values"
            )
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
        raise ExportError(
            "the model cannot be exported to ONNX "
            f"(tried before training, at opset {opset}): {reason}"
        ) from None


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    opset: int,
    metadata: dict[str, str],
    ir_version: int | None = None,
) -> None:
    try:
        proto = to_onnx(model, input_shape, opset)
    except Exception as exc:  # the user's model: an operation or control flow the exporter lacks
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(
            f"exporting {path.name} to ONNX failed: {type(exc).__name__}: {reason}"
        ) from None
    got = opsets(proto).get("ai.onnx")
    if got != opset:
        log.warning(
            "%s: the exporter could not convert the graph to opset %d; it keeps opset %s",
            path.name,
            opset,
            got,
        )
    gemm_to_matmul(proto)
    preprocessing = json.loads(metadata.get("preprocessing") or "{}")
    if "sample_rate" in preprocessing:  # sound: the front end's kernels made in the graph
        generate_constants(proto, preprocessing["features"])
    positive_zero_initializers(proto)
    set_ir_version(proto, ir_version)
    set_metadata(proto, metadata)
    save_model(proto, path)


def artifact_model(model: nn.Module, data) -> nn.Module:
    """What an artifact computes: sound models behind the data's front end (waveforms in),
    every other model as it is."""
    frontend = getattr(data, "frontend", None)
    return model if frontend is None else WithFrontEnd(frontend, model).eval()


def reduced_preprocessing(preprocessing: dict, usage) -> dict:
    """Tables: the used features' names, means and stds only (a deployer measures just
    those); images: unchanged (normalize the image, then take the listed elements)."""
    if "features" not in preprocessing or usage.unit != "features":
        return preprocessing
    keep = [i for i, used in enumerate(usage.mask.tolist()) if used]
    return {
        **preprocessing,
        **{
            k: [preprocessing[k][i] for i in keep]
            for k in ("features", "mean", "std")
            if isinstance(preprocessing.get(k), list)
        },
    }


def run(ctx: StageContext) -> dict:
    data = ctx.data
    metrics = {}
    models = {}
    for artifact, stage in ARTIFACTS.items():
        started = time.perf_counter()
        model, _, spec = load_checkpoint(ctx.input(stage, "model.pt"))
        shrunk = (
            shrink(model, data.input_shape, round_to=ctx.config.export.round_to)
            if artifact == PRUNED and ctx.config.export.shrink
            else None
        )
        models[artifact] = model
        path = ctx.output(f"{artifact}.onnx")
        metadata = artifact_metadata(
            data.preprocessing,
            list(data.classes),
            spec.get("name") or spec["class"],
            artifact,
            dataset=data.name,
            input_shape=data.artifact_shape,
        )

        def make(model=model, path=path, metadata=metadata) -> dict:
            export_onnx(
                artifact_model(model, data),
                data.artifact_shape,
                path,
                ctx.config.export.opset,
                metadata,
                ctx.config.export.ir_version,
            )
            return {}

        if artifact == DENSE:  # the same for every run folder whose train stage made this model
            _, reused = ctx.shared(DENSE_EXPORT, dense_identity(ctx, metadata), [path], make)
            if reused:
                log.info(
                    "%s: the dense model's export, shared by the stage cache (%d bytes)",
                    path,
                    path.stat().st_size,
                )
        else:
            make()
        metrics[artifact] = {
            "path": str(path.relative_to(ctx.run_dir)),
            "bytes": path.stat().st_size,
        }
        if shrunk is not None:
            metrics[artifact]["shrink"] = shrunk
        log.info(
            "exported %s (%d bytes) in %.1fs",
            path,
            path.stat().st_size,
            time.perf_counter() - started,
        )

    model = models[PRUNED]
    # sound: the classifier reads features the graph computes, not inputs a deployer feeds
    usage = (
        None
        if data.kind == "audio"
        else input_usage(model, data.input_shape, getattr(data, "feature_names", None))
    )
    metrics["inputs"] = usage.summary() if usage is not None else None
    if usage is not None:
        log.info("the pruned model %s", usage.sentence())
        if usage.unit == "pixels":
            plot_usage(
                usage,
                ctx.output("inputs.png", in_run_dir=True),
                title=f"{ctx.config.name}: {usage.sentence()}",
            )
    if ctx.config.export.drop_unused_inputs:
        metrics[REDUCED] = export_reduced(ctx, model, spec, usage)
    return metrics


def dense_identity(ctx: StageContext, metadata: dict[str, str]) -> dict:
    """What dense.onnx depends on: the trained model's file, the metadata written into it
    and the export settings that touch it (shrink and drop_unused_inputs touch pruned only)."""
    return {
        "model": sha256_file(ctx.input("train", "model.pt")),
        "metadata": metadata,
        "input_shape": list(ctx.data.artifact_shape),
        "opset": ctx.config.export.opset,
        "ir_version": ctx.config.export.ir_version,
    }


def export_reduced(ctx: StageContext, model: nn.Module, spec: dict, usage) -> dict | None:
    """pruned-inputs.onnx: the pruned model taking only its used inputs."""
    if ctx.data.kind == "audio":
        log.warning(
            "drop_unused_inputs: a sound artifact takes the whole waveform (its features are "
            "computed in the graph); %s.onnx is not written",
            REDUCED,
        )
        return None
    if usage is None:
        log.warning(
            "drop_unused_inputs: no Linear or Conv reads the model's input directly; "
            "%s.onnx is not written",
            REDUCED,
        )
        return None
    data = ctx.data
    reduced, shape = reduced_model(model, usage)
    metadata = artifact_metadata(
        reduced_preprocessing(data.preprocessing, usage),
        list(data.classes),
        spec.get("name") or spec["class"],
        REDUCED,
        dataset=data.name,
        input_shape=shape,
    )
    metadata["inputs"] = json.dumps(usage.metadata())
    path = ctx.output(f"{REDUCED}.onnx")
    started = time.perf_counter()
    export_onnx(
        reduced, shape, path, ctx.config.export.opset, metadata, ctx.config.export.ir_version
    )
    log.info(
        "exported %s: %s (%d bytes) in %.1fs",
        path,
        usage.sentence(),
        path.stat().st_size,
        time.perf_counter() - started,
    )
    return {"path": str(path.relative_to(ctx.run_dir)), "bytes": path.stat().st_size}
