"""Verify stage: run every artifact in onnxruntime (CPU) and measure it.

Per artifact: onnx.checker, accuracy on the whole validation split (`val_accuracy`, what
tune and sweep budgets decide on) and test split (`accuracy`, only reported), inputs
prepared from raw samples with the file's own `preprocessing` metadata; top-1 agreement and
largest logit difference against the PyTorch model it came from, bytes on disk / gzip -9 /
xz -9e, parameters and non-zero parameters counted in the file's initializers (sparsity: the
zeros among the weights, biases apart), the deployable package (the smaller of .onnx.gz and
.onnx.xz, written to deploy/), multiply-accumulates per sample
(`macs`), the weight bytes an onnxruntime session holds after load-time folding
(`weight_bytes`), what it takes on a device (`flash_bytes`, the activation peak at batch 1
and the RAM estimate, and with `[verify] measure_ram` the RAM a fresh onnxruntime process
takes to load and run it: compress.encode.memory), throughput at a large batch and latency
at batch 1 (p50, p95, on `threads` intra-op threads). A float export whose logits differ
from PyTorch by more than `tolerance` times the largest logit (at least 1) is marked
failed. An artifact whose test accuracy is at chance while the model it came from reached a
clearly higher training accuracy (compress.stats.at_chance) gets the status
`warning: at chance ...`, also logged; `compress run --strict` makes that an error.

Latency is measured for all artifacts together, interleaved in rounds in one process:
each round runs every artifact's share of timed calls in turn (in a rotating order), and
p50/p95 are taken over all rounds. Load on the machine then falls on every artifact alike.
`latency_vs_dense` is the median over rounds of the artifact's median call over dense's in
that round, with its distribution-free 95% interval (`latency_vs_dense_low`/`_high`,
compress.latency); an artifact is flagged `slower_than_dense` only when the interval's low
end is above 1 + `slower_margin`, so a rerun on an unchanged machine rarely flips it. Each
artifact is logged as it is verified, with its time, and the rounds show a progress bar on
a terminal (as training does; not with `--no-progress`).

Each artifact's per-image correctness is kept as bits in `verify/correct.npz`, and each row
gets `accuracy_delta_ci`: the 95% paired-bootstrap interval of its accuracy difference to
`dense`, in points (compress.stats).
The export and quantize stages leave their files in their own folders; this stage writes
each final artifact into the run folder with the verified accuracy, the oldest onnxruntime
that loads it (compress.encode.compat) and its own checksum in its metadata
(`seal_artifact`), then measures that final file; its accuracy must equal the one sealed in.

Sound artifacts take the raw waveform and hold the front end: the test clips are fed as
they are, and the dense file's own front-end nodes are run on them and compared with the
PyTorch front end's features (the training features); the largest difference and the
allowed one (`feature_tolerance`) are the stage's `frontend` metrics, and dense is marked
failed beyond it.

Run folders that share a stage cache and the same dense.onnx (the variants of a sweep) seal
and measure dense once (StageContext.shared); its latency is still timed in every run,
interleaved with that run's other artifacts.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

from compress.checkpoint import load_checkpoint
from compress.encode.compat import min_onnxruntime, opsets
from compress.encode.cost import count_macs, session_weight_bytes
from compress.encode.frontend import frontend_model
from compress.encode.inputs import take_used
from compress.encode.memory import MemoryEstimateError, activation_memory, measured_ram_bytes
from compress.encode.onnx_tools import (
    PACKAGERS,
    get_metadata,
    make_session,
    parameter_counts,
    save_model,
    set_metadata,
    write_packages,
)
from compress.errors import IntegrityError
from compress.files import sha256_file, write_bytes
from compress.latency import summarize, timed_rounds
from compress.results import DENSE, FLOAT_ARTIFACTS, PRUNED, Artifact
from compress.stages.context import StageContext
from compress.stages.export import REDUCED
from compress.stages.quantize import variant_name
from compress.stats import (
    at_chance,
    chance_accuracy,
    pack_correct,
    paired_bootstrap_ci,
    unpack_correct,
)
from compress.training import predict
from compress.variants import get_variant

log = logging.getLogger(__name__)
DENSE_VERIFY = "dense-verify"  # dense's measurements, shared by run folders (StageContext.shared)


def artifact_names(ctx: StageContext) -> list[tuple[str, str]]:
    """(artifact, stage of the PyTorch model it is compared with), in report order."""
    q = ctx.config.quantize
    source_stage = "train" if q.source == DENSE else "finetune"
    names = [(DENSE, "train"), (PRUNED, "finetune")]
    if ctx.config.export.drop_unused_inputs and ctx.input("export", f"{REDUCED}.onnx").is_file():
        names.append((REDUCED, "finetune"))
    return names + [(variant_name(q.source, v), source_stage) for v in q.variants]


def artifact_source(ctx: StageContext, name: str) -> Path:
    """The unsealed file of artifact `name`, in the folder of the stage that wrote it."""
    q = ctx.config.quantize
    quantized = {variant_name(q.source, v) for v in q.variants}
    return ctx.input("quantize" if name in quantized else "export", f"{name}.onnx")


def prepare_inputs(samples: np.ndarray, metadata: dict[str, str]) -> np.ndarray:
    """Raw samples -> model input, using only the file's `preprocessing` metadata.

    Images (raw 0-255 pixels [N, C, H, W], already `size`): (pixel * scale - mean[c]) / std[c].
    Tables (raw values [N, F], columns in `features` order): (x - mean[f]) / std[f].
    Arrays (raw values [N, *input_shape]): (x - mean) / std, mean and std broadcast.
    Sound (waveforms [N, clip_samples] in [-1, 1]): as they are; the graph holds the front end.
    """
    pre = json.loads(metadata["preprocessing"])
    if "sample_rate" in pre:
        return samples.astype(np.float32)
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    if "features" in pre or "normalize" in pre:
        return ((samples.astype(np.float32) - mean) / std).astype(np.float32)
    mean, std = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    return ((samples.astype(np.float32) * np.float32(pre["scale"]) - mean) / std).astype(np.float32)


def model_inputs(samples: np.ndarray, metadata: dict[str, str]) -> np.ndarray:
    """Raw samples -> what the file takes, from its metadata alone: `prepare_inputs`, and for
    a file that takes only the used inputs (metadata `inputs`), those inputs. A table's file
    lists only the used features' mean and std, so its columns are picked first."""
    if "inputs" not in metadata:
        return prepare_inputs(samples, metadata)
    used = json.loads(metadata["inputs"])
    if "features" in json.loads(metadata["preprocessing"]):
        return prepare_inputs(take_used(samples, used), metadata)
    return take_used(prepare_inputs(samples, metadata), used)


def run_batches(
    session: ort.InferenceSession, x: np.ndarray, batch_size: int
) -> tuple[np.ndarray, float]:
    """Logits for all of `x`, and the samples per second it took."""
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    out = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    seconds = time.perf_counter() - started
    return np.concatenate(out), len(x) / seconds


def latency_ms(
    session: ort.InferenceSession, x: np.ndarray, repetitions: int
) -> tuple[float, float]:
    """p50 and p95 of single-sample inference of one session alone, after a warm-up."""
    return interleaved_latency_ms([session], [x], repetitions, rounds=1)[0]


def timed(
    sessions: list[ort.InferenceSession],
    inputs: list[np.ndarray],
    repetitions: int,
    rounds: int,
    progress: bool = False,
) -> list[dict]:
    """compress.latency.summarize of the sessions timed interleaved in rounds (each on its
    own inputs: a file that takes only the used features gets those); the first session is
    the baseline. `progress`: a progress bar of the rounds on stderr."""
    total = max(1, min(rounds, repetitions))
    with tqdm(total=total, desc="latency", unit="round", leave=False, disable=not progress) as bar:
        times = timed_rounds(sessions, inputs, repetitions, rounds, on_round=bar.update)
    return summarize(times)


def interleaved_latency_ms(
    sessions: list[ort.InferenceSession],
    inputs: list[np.ndarray],
    repetitions: int,
    rounds: int,
    progress: bool = False,
) -> list[tuple[float, float]]:
    """(p50, p95) in ms of single-sample inference for each session, timed interleaved in
    rounds (compress.latency); percentiles are over all of a session's calls."""
    return [(t["p50"], t["p95"]) for t in timed(sessions, inputs, repetitions, rounds, progress)]


def add_latencies(
    rows: list[dict],
    sessions: list[ort.InferenceSession],
    inputs: list[np.ndarray],
    config,
    progress: bool = False,
) -> None:
    """Time all sessions interleaved; set p50/p95, the ratio to dense (the median per-round
    ratio) with its 95% interval, and the slow flag: the interval's low end above
    1 + `slower_margin`, so noise alone rarely raises it. The first row is the baseline."""
    timings = timed(sessions, inputs, config.repetitions, config.rounds, progress)
    for row, t in zip(rows, timings, strict=True):
        row["latency_ms_b1_p50"] = round(t["p50"], 4)
        row["latency_ms_b1_p95"] = round(t["p95"], 4)
        row["latency_vs_dense"] = round(t["vs_base"], 3)
        row["latency_vs_dense_low"] = round(t["vs_base_low"], 3)
        row["latency_vs_dense_high"] = round(t["vs_base_high"], 3)
        row["slower_than_dense"] = bool(t["vs_base_low"] > 1 + config.slower_margin)


def seal_artifact(
    source: Path,
    path: Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None,
    config,
) -> float:
    """Write artifact `path` from a stage's file `source`, with its test (and validation)
    accuracy measured in onnxruntime, the oldest onnxruntime that loads it and its own
    checksum in its metadata; returns the test accuracy."""
    model = onnx.load(str(source))
    metadata = get_metadata(model)
    session = make_session(source, config.threads)
    logits = run_batches(session, model_inputs(pixels, metadata), config.throughput_batch)[0]
    accuracy = float((logits.argmax(1) == labels).mean())
    measured = {
        "accuracy": f"{accuracy:.6f}",
        "accuracy_measured_on": f"{len(labels)} test samples, onnxruntime {ort.__version__}",
        "min_onnxruntime": min_onnxruntime(model),
    }
    if val is not None:
        val_logits = run_batches(session, model_inputs(val[0], metadata), config.throughput_batch)[
            0
        ]
        measured["val_accuracy"] = f"{float((val_logits.argmax(1) == val[1]).mean()):.6f}"
    set_metadata(model, measured)
    save_model(model, path, seal=True)
    return accuracy


def logit_tolerance(reference: np.ndarray, tolerance: float) -> float:
    """The largest logit difference a float export may have: `tolerance` for logits up to 1
    in size, relative beyond (float32 rounding grows with the values summed)."""
    return tolerance * max(1.0, float(np.abs(reference).max()))


def verify_artifact(
    path: Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray | None,
    config,
    is_float: bool,
    package_dir: Path,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    per_image: dict[str, np.ndarray] | None = None,
    session: ort.InferenceSession | None = None,
    time_alone: bool = True,
) -> Artifact:
    """Check and measure one .onnx file on the test samples (`pixels`, `labels`) and, when
    given, the validation samples `val`; `reference` holds PyTorch's test logits.
    `per_image`, when given, receives the artifact's per-image correctness on the test set.
    Latency is measured here only with `time_alone` (run() times all artifacts together)."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    metadata = get_metadata(model)
    params, nonzero = parameter_counts(model)
    weights, nonzero_weights = parameter_counts(model, weights_only=True)
    x = model_inputs(pixels, metadata)
    session = session or make_session(path, config.threads)
    logits, throughput = run_batches(session, x, config.throughput_batch)
    p50, p95 = latency_ms(session, x, config.repetitions) if time_alone else (None, None)
    correct = logits.argmax(1) == labels
    if per_image is not None:
        per_image[path.stem] = correct
    row: Artifact = {
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
        "macs": count_macs(model),
        "weight_bytes": session_weight_bytes(path),
        "accuracy": float(correct.mean()),
        "val_accuracy": None,
        "agreement": None,
        "max_logit_diff": None,
        "latency_ms_b1_p50": None if p50 is None else round(p50, 4),
        "latency_ms_b1_p95": None if p95 is None else round(p95, 4),
        "latency_vs_dense": None,
        "slower_than_dense": None,
        "throughput": round(throughput, 1),
        "status": "ok",
    }
    row.update(memory_keys(path, model, row["weight_bytes"], config.measure_ram))
    if "code_entropy_bits" in metadata:  # codebook files: bits per non-zero weight of their codes
        row["code_entropy_bits"] = float(metadata["code_entropy_bits"])
    if val is not None:
        val_logits, _ = run_batches(
            session, model_inputs(val[0], metadata), config.throughput_batch
        )
        row["val_accuracy"] = float((val_logits.argmax(1) == val[1]).mean())
    if reference is not None:
        row["agreement"] = float((logits.argmax(1) == reference.argmax(1)).mean())
        row["max_logit_diff"] = float(np.abs(logits - reference).max())
        allowed = logit_tolerance(reference, config.tolerance)
        if is_float and row["max_logit_diff"] > allowed:
            row["status"] = (
                f"failed: logits differ from PyTorch by {row['max_logit_diff']:.2e} "
                f"(tolerance {allowed:.1e})"
            )
            log.error("%s: %s", path.name, row["status"])
    return row


def check_frontend(path: Path, data, config) -> dict:
    """The features the artifact's own front-end nodes compute from the test waveforms,
    against the PyTorch front end's (the training features): largest difference, allowed
    `feature_tolerance` (relative beyond |feature| 1)."""
    part = frontend_model(onnx.load(str(path)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, config.threads)
    options.log_severity_level = 3
    session = ort.InferenceSession(part.SerializeToString(), options, ["CPUExecutionProvider"])
    got, _ = run_batches(session, data.images["test"].numpy(), config.throughput_batch)
    want = data.normalize(data.images["test"])[:, 0].numpy()
    diff = float(np.abs(got - want).max())
    allowed = config.feature_tolerance * max(1.0, float(np.abs(want).max()))
    result = {
        "artifact": path.name,
        "clips": len(want),
        "max_feature_diff": diff,
        "tolerance": allowed,
        "status": "ok" if diff <= allowed else "failed",
    }
    log.info(
        "%s: in-graph features vs PyTorch's on %d test clips: largest difference %.2e (%s)",
        path.name,
        len(want),
        diff,
        "within" if diff <= allowed else "beyond",
    )
    return result


def memory_keys(path: Path, model: onnx.ModelProto, weight_bytes: int, measure: bool) -> dict:
    """flash, activation and RAM figures of one file (compress.encode.memory): the activation
    keys are None for a graph it cannot estimate (a subgraph, an unknown shape),
    measured_ram_bytes None without `measure` ([verify] measure_ram = false)."""
    try:
        memory = activation_memory(model)
    except MemoryEstimateError as exc:
        log.warning("%s: %s", path.name, exc)
        memory = None
    peak = None if memory is None else memory.peak_bytes
    tensors = [] if memory is None else memory.peak_tensors
    return {
        "flash_bytes": path.stat().st_size,
        "peak_activation_bytes": peak,
        "peak_activation_tensors": None
        if memory is None
        else [{"name": t.name, "shape": list(t.shape), "bytes": t.bytes} for t in tensors],
        "ram_bytes": None if peak is None else weight_bytes + peak,
        "measured_ram_bytes": measured_ram_bytes(path) if measure else None,
    }


def dense_identity(ctx: StageContext) -> dict:
    """What dense's measurements depend on: its file, the PyTorch model it is compared with,
    the data (files and splits) and the verify settings."""
    return {
        "onnx": sha256_file(artifact_source(ctx, DENSE)),
        "model": sha256_file(ctx.input("train", "model.pt")),
        "data": ctx.data.fingerprint,
        "data_settings": ctx.config.data.model_dump(mode="json"),
        "verify": ctx.config.verify.model_dump(mode="json"),
    }


def training_accuracy(ctx: StageContext, stage: str) -> float | None:
    """The training accuracy logged in the last epoch of `stage` (the model an artifact came
    from), or of train when `stage` trained no epoch; None when neither did."""
    for name in dict.fromkeys((stage, "train")):
        epochs = ctx.metrics(name).get("epochs") or []
        if epochs:
            return epochs[-1]["train_accuracy"]
    return None


def chance_warning(accuracy: float, train_accuracy: float | None, labels: np.ndarray) -> str | None:
    """The status of an artifact at chance on the test `labels` although training learned."""
    if not at_chance(accuracy, train_accuracy, labels):
        return None
    return (
        f"warning: at chance ({accuracy:.1%} on test, chance {chance_accuracy(labels):.1%}) "
        f"while training accuracy is {train_accuracy:.0%}"
    )


def run(ctx: StageContext) -> dict:
    data = ctx.data
    config = ctx.config.verify
    pixels = data.images["test"].numpy()
    labels = data.labels["test"].numpy()
    val = (data.images["val"].numpy(), data.labels["val"].numpy())
    x_torch, _ = data.tensors("test")
    references: dict[str, np.ndarray] = {}
    package_dir = ctx.run_dir / "deploy"
    rows, sessions, timing_inputs = [], [], []
    per_image: dict[str, np.ndarray] = {}
    opened: dict[str, ort.InferenceSession] = {}
    q = ctx.config.quantize
    lossless = {variant_name(q.source, v) for v in q.variants if get_variant(v).lossless}
    with torch.inference_mode():
        for name, stage in artifact_names(ctx):
            started = time.perf_counter()
            path = ctx.output(f"{name}.onnx", in_run_dir=True)

            def measure(name=name, stage=stage, path=path) -> dict:
                if stage not in references:
                    model, _, _ = load_checkpoint(ctx.input(stage, "model.pt"))
                    references[stage] = predict(model, x_torch).numpy()
                sealed = seal_artifact(
                    artifact_source(ctx, name), path, pixels, labels, val, config
                )
                is_float = name in FLOAT_ARTIFACTS or name == REDUCED or name in lossless
                opened[name] = make_session(path, config.threads)
                row = verify_artifact(
                    path,
                    pixels,
                    labels,
                    references[stage],
                    config,
                    is_float,
                    package_dir,
                    val,
                    per_image,
                    session=opened[name],
                    time_alone=False,
                )
                if row["accuracy"] != sealed:  # the metadata changed nothing the graph computes
                    raise IntegrityError(
                        f"{path.name}: accuracy {row['accuracy']} differs from the sealed {sealed}"
                    )
                return {"row": row, "correct": pack_correct(per_image[name]).tobytes().hex()}

            if name == DENSE:  # the same for every run folder with this dense.onnx: measured once
                files = [path, *(package_dir / f"{name}{suffix}" for suffix in PACKAGERS)]
                measured, reused = ctx.shared(DENSE_VERIFY, dense_identity(ctx), files, measure)
                if reused:
                    log.info(
                        "%s: sealed and measured once for the run folders sharing the stage cache; "
                        "its latency is timed here",
                        path.name,
                    )
                    per_image[name] = unpack_correct(
                        np.frombuffer(bytes.fromhex(measured["correct"]), np.uint8), len(labels)
                    )
            else:
                measured = measure()
            row = dict(measured["row"])
            warning = chance_warning(row["accuracy"], training_accuracy(ctx, stage), labels)
            if warning is not None and row["status"] == "ok":
                row["status"] = warning
                log.warning("%s: %s", path.name, warning.removeprefix("warning: "))
            ctx.outputs += [ctx.run_dir / row["deploy_path"]]
            rows.append(row)
            sessions.append(
                opened.get(name) or make_session(path, config.threads)
            )  # latency: timed below, always
            metadata = get_metadata(onnx.load(str(path), load_external_data=False))
            timing_inputs.append(model_inputs(pixels[:256], metadata))
            log.info(
                "verified %s in %.1fs: validation accuracy %.4f, test accuracy %.4f, "
                "%d bytes (%d deploy), %s MACs",
                row["path"],
                time.perf_counter() - started,
                row["val_accuracy"],
                row["accuracy"],
                row["bytes"],
                row["deploy_bytes"],
                row["macs"],
            )
    started = time.perf_counter()
    log.info(
        "timing %d artifacts at batch 1, interleaved in %d rounds",
        len(rows),
        max(1, min(config.rounds, config.repetitions)),
    )
    add_latencies(rows, sessions, timing_inputs, config, progress=ctx.progress)
    for row in rows:
        log.info(
            "latency %s: p50 %.3f ms (%.2fx dense [%.2f, %.2f])%s",
            row["path"],
            row["latency_ms_b1_p50"],
            row["latency_vs_dense"],
            row["latency_vs_dense_low"],
            row["latency_vs_dense_high"],
            ", slower than dense" if row["slower_than_dense"] else "",
        )
    log.info("latency timed in %.1fs", time.perf_counter() - started)
    for row in rows:
        row["accuracy_delta_ci"] = list(
            paired_bootstrap_ci(per_image[row["name"]], per_image[DENSE])
        )
    buffer = io.BytesIO()  # the evidence behind every interval, 1 bit per image
    np.savez_compressed(
        buffer, count=len(labels), **{name: pack_correct(c) for name, c in per_image.items()}
    )
    write_bytes(ctx.output("correct.npz"), buffer.getvalue())
    if data.kind != "audio":
        return {"artifacts": rows}
    frontend = check_frontend(ctx.output(f"{DENSE}.onnx", in_run_dir=True), data, config)
    if frontend["status"] != "ok":
        rows[0]["status"] = (
            f"failed: in-graph features differ from PyTorch's by {frontend['max_feature_diff']:.2e}"
            f" (tolerance {frontend['tolerance']:.1e})"
        )
        log.error("%s: %s", rows[0]["path"], rows[0]["status"])
    return {"artifacts": rows, "frontend": frontend}
