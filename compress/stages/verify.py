"""Verify stage: run every artifact in onnxruntime (CPU) and measure it.

Per artifact: onnx.checker, accuracy on the whole validation split (`val_accuracy`, what
tune and sweep budgets decide on) and test split (`accuracy`, only reported), inputs
prepared from raw samples with the file's own `preprocessing` metadata; top-1 agreement and largest logit difference
against the PyTorch model it came from, bytes on disk / gzip -9 / xz -9e, parameters and
non-zero parameters counted in the file's initializers (sparsity: the zeros among the weights,
biases apart), the deployable package (the
smaller of .onnx.gz and .onnx.xz, written to deploy/), latency at batch 1 (p50, p95, on
`threads` intra-op threads) and throughput at a large batch. A float export whose logits
differ from PyTorch by more than `tolerance` is marked failed.

The export and quantize stages leave their files in their own folders; this stage writes
each final artifact into the run folder with the verified accuracy, the oldest onnxruntime
that loads it (compress.encode.compat) and its own checksum in its metadata, then measures
that final file (sizes, packages, latency; its logits must equal those measured before).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from compress.checkpoint import load_checkpoint
from compress.encode.compat import min_onnxruntime, opsets
from compress.encode.onnx_tools import (
    get_metadata,
    parameter_counts,
    save_model,
    set_metadata,
    write_packages,
)
from compress.stages.context import StageContext
from compress.stages.quantize import variant_name
from compress.training import predict

log = logging.getLogger(__name__)


def artifact_names(ctx: StageContext) -> list[tuple[str, str]]:
    """(artifact, stage of the PyTorch model it is compared with), in report order."""
    q = ctx.config.quantize
    source_stage = "train" if q.source == "dense" else "finetune"
    names = [("dense", "train"), ("pruned", "finetune")]
    return names + [(variant_name(q.source, v), source_stage) for v in q.variants]


def artifact_source(name: str) -> str:
    """The stage whose folder holds the unsealed file of artifact `name`."""
    return "export" if name in ("dense", "pruned") else "quantize"


def make_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def prepare_inputs(samples: np.ndarray, metadata: dict[str, str]) -> np.ndarray:
    """Raw samples -> model input, using only the file's `preprocessing` metadata.

    Images (raw 0-255 pixels [N, C, H, W], already `size`): (pixel * scale - mean[c]) / std[c].
    Tables (raw values [N, F], columns in `features` order): (x - mean[f]) / std[f].
    """
    pre = json.loads(metadata["preprocessing"])
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    if "features" in pre:
        return ((samples.astype(np.float32) - mean) / std).astype(np.float32)
    mean, std = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    return ((samples.astype(np.float32) * np.float32(pre["scale"]) - mean) / std).astype(np.float32)


def run_batches(session: ort.InferenceSession, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Logits for all of `x`, and the samples per second it took."""
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    out = [session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    seconds = time.perf_counter() - started
    return np.concatenate(out), len(x) / seconds


def latency_ms(session: ort.InferenceSession, x: np.ndarray, repetitions: int) -> tuple[float, float]:
    """p50 and p95 of single-sample inference, after a warm-up."""
    name = session.get_inputs()[0].name
    samples = [x[i % len(x)][None] for i in range(repetitions)]
    for sample in samples[: min(20, repetitions)]:
        session.run(None, {name: sample})
    times = np.empty(repetitions)
    for i, sample in enumerate(samples):
        started = time.perf_counter()
        session.run(None, {name: sample})
        times[i] = time.perf_counter() - started
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def verify_artifact(
    path: Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray | None,
    config,
    is_float: bool,
    package_dir: Path,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    source: Path | None = None,
) -> dict:
    """Check and measure one .onnx file on the test samples (`pixels`, `labels`) and, when
    given, the validation samples `val`; `reference` holds PyTorch's test logits.

    With `source` (the unsealed file of a stage folder), `path` is first written from it
    with the verified accuracy, the oldest onnxruntime it needs and its own checksum in its
    metadata; then that final file is measured."""
    model = onnx.load(str(source or path))
    onnx.checker.check_model(model, full_check=True)
    metadata = get_metadata(model)
    params, nonzero = parameter_counts(model)
    weights, nonzero_weights = parameter_counts(model, weights_only=True)
    x = prepare_inputs(pixels, metadata)
    accuracy = None
    if source is not None:
        first = make_session(source, config.threads)
        logits = run_batches(first, x, config.throughput_batch)[0]
        accuracy = float((logits.argmax(1) == labels).mean())
        measured = {
            "accuracy": f"{accuracy:.6f}",
            "accuracy_measured_on": f"{len(labels)} test samples, onnxruntime {ort.__version__}",
            "min_onnxruntime": min_onnxruntime(model),
        }
        if val is not None:
            val_logits = run_batches(first, prepare_inputs(val[0], metadata), config.throughput_batch)[0]
            measured["val_accuracy"] = f"{float((val_logits.argmax(1) == val[1]).mean()):.6f}"
        set_metadata(model, measured)
        save_model(model, path, seal=True)
    session = make_session(path, config.threads)
    final_logits, throughput = run_batches(session, x, config.throughput_batch)
    if accuracy is not None and not np.array_equal(final_logits, logits):
        raise RuntimeError(f"{path.name}: the sealed file computes other logits than {source}")
    logits = final_logits
    p50, p95 = latency_ms(session, x, config.repetitions)
    row = {
        "name": path.stem,
        "path": path.name,
        **write_packages(path, package_dir),
        "params": params,
        "nonzero_params": nonzero,
        "weights": weights,
        "nonzero_weights": nonzero_weights,
        # zeros among the weights (matrices and kernels), biases apart: as the prune log says
        "sparsity": round(1 - nonzero_weights / weights, 6) if weights else 0.0,
        "min_onnxruntime": min_onnxruntime(model),
        "ir_version": model.ir_version,
        "opset": opsets(model).get("ai.onnx"),
        "accuracy": float((logits.argmax(1) == labels).mean()),
        "val_accuracy": None,
        "agreement": None,
        "max_logit_diff": None,
        "latency_ms_b1_p50": round(p50, 4),
        "latency_ms_b1_p95": round(p95, 4),
        "throughput": round(throughput, 1),
        "status": "ok",
    }
    if val is not None:
        val_logits, _ = run_batches(session, prepare_inputs(val[0], metadata), config.throughput_batch)
        row["val_accuracy"] = float((val_logits.argmax(1) == val[1]).mean())
    if reference is not None:
        row["agreement"] = float((logits.argmax(1) == reference.argmax(1)).mean())
        row["max_logit_diff"] = float(np.abs(logits - reference).max())
        if is_float and row["max_logit_diff"] > config.tolerance:
            row["status"] = (
                f"failed: logits differ from PyTorch by {row['max_logit_diff']:.2e} "
                f"(tolerance {config.tolerance:.0e})"
            )
            log.error("%s: %s", path.name, row["status"])
    return row


def run(ctx: StageContext) -> dict:
    data = ctx.data
    pixels = data.images["test"].numpy()
    labels = data.labels["test"].numpy()
    val = (data.images["val"].numpy(), data.labels["val"].numpy())
    x_torch, _ = data.tensors("test")
    references: dict[str, np.ndarray] = {}
    package_dir = ctx.run_dir / "deploy"
    rows = []
    with torch.inference_mode():
        for name, stage in artifact_names(ctx):
            if stage not in references:
                model, _, _ = load_checkpoint(ctx.input(stage, "model.pt"))
                references[stage] = predict(model, x_torch).numpy()
            path = ctx.output(f"{name}.onnx", in_run_dir=True)
            is_float = name in ("dense", "pruned")
            row = verify_artifact(
                path, pixels, labels, references[stage], ctx.config.verify, is_float, package_dir, val,
                source=ctx.input(artifact_source(name), f"{name}.onnx"),
            )
            ctx.outputs += [ctx.run_dir / row["deploy_path"]]
            rows.append(row)
            log.info(
                "verified %s: validation accuracy %.4f, test accuracy %.4f, %d bytes (%d gzip), p50 %.3f ms",
                path.name, row["val_accuracy"], row["accuracy"], row["bytes"], row["gzip_bytes"], row["latency_ms_b1_p50"],
            )
    return {"artifacts": rows}
