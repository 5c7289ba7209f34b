"""The pipeline runner: the only place that knows the order of the stages.

    config = load_pipeline("pipelines/mnist.toml")
    report = run_pipeline(config, out_dir="runs/mnist")

Each stage has a cache key hashed from its own settings, its parents' keys, the data files'
checksums, the model definition's source, the package version and the stage's revision (raised
when its code computes something else from the same settings). A stage whose folder
holds a finished record (`<stage>/stage.json`) with the same key, whose outputs still match
their recorded checksums and whose parents' outputs are the ones it was made from, is
reused ("cached"); anything else runs again, and so do the stages after it, because their
keys include its key. With a shared `cache_dir` (compress.cache), a stage can also be taken
from another run folder's finished stage with the same key (sweeps, tuning).

Everything the user can get wrong (pipeline, data, model) is checked before the run folder
is touched, so a mistake writes nothing.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from compress import distributed
from compress.bits import check_layers
from compress.budget import check_artifacts, limits_of
from compress.cache import StageCache
from compress.checkpoint import build_from_spec, load_user_weights, model_spec
from compress.config import PipelineConfig
from compress.data import Dataset, check_files, load_data, peek_data
from compress.errors import CompressError
from compress.files import (
    hash_object,
    locked_dir,
    read_json,
    remove_stale_temp_files,
    sha256_file,
    stays_inside,
    write_json,
)
from compress.pruning import prunable_layers
from compress.registry import factory_source
from compress.report import add_comparisons, write_reports
from compress.results import DENSE, Artifact, Report, RunReport
from compress.stages import export, finetune, prune, quantize, train, verify
from compress.stages.context import StageContext
from compress.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageDef:
    name: str
    run: Callable[[StageContext], dict]
    settings: Callable[[PipelineConfig], Any]  # the part of the config this stage depends on
    parents: tuple[str, ...]
    # Raised when the stage's code computes something else from the same settings, so that a
    # run folder or cache made by the older code is not reused (the key does not hash code).
    # 1: train and finetune measure BatchNorm statistics again after training.
    # train 2, prune 1, finetune 3, quantize 1: on samples drawn across the training split,
    # not its first ones (Dataset.spread_index); static calibration too.
    # train 3, finetune 4: the running statistics kept where they do better on validation.
    # prune 2: channels' measured widths are multiples of round_to; the latency target's
    # estimate counts one call's overhead once.
    revision: int = 0


def _train_settings(config: PipelineConfig) -> dict:
    # sync_batchnorm = false (the default) stays out of the key, which is as it was before
    train = config.train.model_dump(mode="json", by_alias=True)
    if not train["sync_batchnorm"]:
        del train["sync_batchnorm"]
    return {"model": config.model, "train": train}


def _quantize_settings(config: PipelineConfig) -> dict:
    # static_layers = "all" (the default) stays out of the key, which is as it was before;
    # "faster" times layers at [verify] threads, so the count is part of what it depends on
    quantize = config.quantize.model_dump(mode="json", by_alias=True)
    if quantize["static_layers"] == "all":
        del quantize["static_layers"]
        return quantize
    return {"quantize": quantize, "threads": config.verify.threads}


def _finetune_settings(config: PipelineConfig) -> Any:
    # qat_bits = "quantize" with [quantize] bits = "auto": the widths are chosen in this
    # stage, by [quantize] auto and the packed scales
    if config.finetune.qat_bits != "quantize":
        return config.finetune
    return {
        "finetune": config.finetune,
        "auto": config.quantize.auto,
        "scales": config.quantize.packed.scales,
    }


STAGES: tuple[StageDef, ...] = (
    StageDef("train", train.run, _train_settings, (), revision=3),
    StageDef("prune", prune.run, lambda c: c.prune, ("train",), revision=2),
    StageDef("finetune", finetune.run, _finetune_settings, ("prune",), revision=4),
    StageDef("export", export.run, lambda c: c.export, ("train", "finetune")),
    StageDef("quantize", quantize.run, _quantize_settings, ("export",), revision=1),
    StageDef("verify", verify.run, lambda c: c.verify, ("export", "quantize")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
# The stages that may train: with several processes (compress.distributed) every rank runs
# them; the others run on rank 0 alone.
TRAINING = ("train", "prune", "finetune")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompressError(
            "--device cuda: no CUDA GPU is available here; use --device cpu or auto"
        )
    return torch.device(name)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "compress": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _plain(value: Any) -> Any:
    return (
        value.model_dump(mode="json", by_alias=True)
        if hasattr(value, "model_dump")
        else ({k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value)
    )


def _model_source(config: PipelineConfig) -> str:
    model = config.model
    if model.name is not None:
        return factory_source(model.name)
    return Path(config.resolve(model.path)).read_text()


def stage_keys(config: PipelineConfig, data: Dataset) -> dict[str, str]:
    """The cache key of every stage (see module docstring)."""
    weights = config.resolve(config.model.weights)
    inputs = {
        "version": __version__,
        "data": {
            "name": data.name,
            "files": data.fingerprint,
            "batch_size": config.data.batch_size,
            "seed": config.data.seed,
            "validation": config.data.validation,
            **({"shift": shift} if (shift := getattr(config.data, "shift", 0)) else {}),
        },
        "model_source": hash_object(_model_source(config)),
        "weights": sha256_file(weights) if weights else None,
        # several processes train the same steps, but sum in another order (and BatchNorm's
        # batch statistics are a rank's slice's): not the same bits, so not the same key
        **({"world_size": n} if (n := distributed.world().size) > 1 else {}),
    }
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage.name] = hash_object(
            {
                "stage": stage.name,
                "settings": _plain(stage.settings(config)),
                "parents": [keys[p] for p in stage.parents],
                **(inputs if not stage.parents else {}),
                **({"revision": stage.revision} if stage.revision else {}),  # 0: the keys as before
            }
        )
    return keys


def cached_record(run_dir: Path, name: str, key: str, inputs: dict[str, str]) -> dict | None:
    """The stage's finished record if it matches `key`, was made from `inputs` (its parents'
    outputs: path -> sha256) and its outputs are intact."""
    path = run_dir / name / "stage.json"
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if record.get("inputs", {}) != inputs:
        log.warning("%s: the files it was made from have changed; running the stage again", name)
        return None
    if not all(isinstance(rel, str) and stays_inside(rel) for rel in record.get("outputs", {})):
        log.warning(
            "%s: its stage.json names an output outside the run folder; running the stage again",
            name,
        )
        return None
    for rel, digest in record.get("outputs", {}).items():
        file = run_dir / rel
        if not file.is_file() or sha256_file(file) != digest:
            log.warning("%s: output %s is missing or changed; running the stage again", name, rel)
            return None
    return record


def check_model(
    config: PipelineConfig, input_shape: tuple[int, ...], num_classes: int, dataset: str
) -> None:
    """Build the model (with its [model] weights) and check that it maps samples of
    `input_shape` to `num_classes` logits, has the layers [prune] names and the inputs its
    keep_inputs counts."""
    spec = model_spec(config.model, config.base_dir, num_classes, input_shape)
    try:
        model = build_from_spec(spec)
    except CompressError:
        raise
    except Exception as exc:  # the user's own constructor
        raise CompressError(
            f"building the model failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if config.model.weights is not None:
        load_user_weights(model, config.resolve(config.model.weights), config.model.weights_partial)
    x = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise CompressError(
            f"the model does not accept {dataset} images of shape {tuple(x.shape)}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CompressError(
            f"the model outputs {got} but {dataset} has {num_classes} classes: "
            f"expected logits of shape (batch, {num_classes})"
        )
    if config.prune.enabled:
        prune.check_layer_names(model, config.prune)
        prune.check_inputs_to_keep(model, config.prune, input_shape)
    _check_width_layers(model, config)
    # A model torch cannot export would otherwise fail after all the training.
    export.check_exportable(model, input_shape, config.export.opset)


def _check_width_layers(model: torch.nn.Module, config: PipelineConfig) -> None:
    """That the per-layer width tables name layers of the model (before any training)."""
    layers = list(prunable_layers(model))
    for key, bits in (
        ("train.qat_bits", config.train.qat_bits),
        ("finetune.qat_bits", config.finetune.qat_bits),
        ("prune.gradual.qat_bits", config.prune.gradual.qat_bits),
        ("finetune.share.bits", config.finetune.share.bits),
        ("quantize.bits", config.quantize.bits),
    ):
        check_layers(bits, layers, key)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def check_paths(config: PipelineConfig, data_root: str | None = None) -> None:
    """That every file and folder the pipeline names exists ([model] path and weights, the
    data's root, an image folder's train/, a CSV table's files), before anything is loaded:
    a missing file is reported at once, not after the data set has been read."""
    for key, path in (("model", config.model.path), ("model.weights", config.model.weights)):
        resolved = config.resolve(path)
        if resolved is not None and not resolved.is_file():
            what = "is a folder, not a file" if resolved.is_dir() else "does not exist"
            raise CompressError(f"{key} file {resolved} {what}")
    check_files(config.data, config.base_dir, data_root)


def check_pipeline(config: PipelineConfig) -> None:
    """What `compress validate` checks beyond the file itself: the files it names, the
    model, against the data set's input shape and classes, known without decoding the data
    (skipped when the data is not there to look at), and that it exports to ONNX."""
    check_paths(config)
    shape = peek_data(config.data, config.base_dir)
    if shape is not None:
        check_model(config, shape[0], shape[1], config.data.name)


def check_inputs(config: PipelineConfig, data_root: str | None) -> Dataset:
    """Everything that can be checked before the run folder is touched: files, data, model."""
    check_paths(config, data_root)
    data = load_data(config.data, config.base_dir, data_root)
    check_model(config, data.input_shape, data.num_classes, data.name)
    return data


def run_pipeline(
    config: PipelineConfig,
    out_dir: str | Path | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    force: bool = False,
    from_stage: str | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    until: str | None = None,
) -> RunReport | dict:
    """Run (or reuse) every stage, then write the report and return it as a RunReport
    (compress.results: report.json with attribute access, `report.artifacts[0].accuracy`).

    `until`: stop after this stage and return {"stages": [...]} without a report (used by
    commands that need only the trained model, such as `compress sensitivity`).

    `cache_dir`: a stage cache shared with other run folders (compress.cache): a stage not
    finished in this run folder is taken from there when its key is, and put there after
    it runs. Processes that share a cache run each stage key once.
    """
    for option, value in (("--from", from_stage), ("until", until)):
        if value is not None and value not in STAGE_NAMES:
            raise CompressError(
                f"{option} {value!r}: not a stage; stages are {', '.join(STAGE_NAMES)}"
            )
    torch_device = resolve_device(device)
    if distributed.launched():  # `compress run --nproc` checked them once before the ranks
        data = load_data(config.data, config.base_dir, data_root)
    else:
        data = check_inputs(config, data_root)
    torch_device = distributed.init(torch_device)
    if distributed.active() and cache_dir is not None:
        raise CompressError("a shared stage cache is for one process per run; leave it out")
    # ranks other than 0 write only to a scratch folder of their own (compress.distributed)
    main = distributed.world().main or not distributed.active()
    run_dir = Path(out_dir or Path("runs") / config.name)
    run_dir = run_dir if main else distributed.scratch_dir(run_dir)
    keys = stage_keys(config, data)
    rerun_from = 0 if force else (STAGE_NAMES.index(from_stage) if from_stage else len(STAGES))
    cache = StageCache(cache_dir) if cache_dir is not None else None

    run = _Run(config, run_dir, keys, torch_device, data, progress and main, cache)
    if not main:
        return _follow(run)
    with locked_dir(run_dir):
        file_log = _attach_run_log(run_dir)
        try:
            for path in remove_stale_temp_files(run_dir):
                log.info("removed %s, left by an interrupted run", path)
            log.info(
                "data: %s, %d train, %d validation and %d test samples from %s",
                data.name,
                data.size("train"),
                data.size("val"),
                data.size("test"),
                Path(next(iter(data.files))).parent,
            )
            write_json(run_dir / "pipeline.json", config.model_dump(mode="json", by_alias=True))
            stages = []
            outputs: dict[str, dict[str, str]] = {}  # stage -> its output files' checksums
            for index, stage in enumerate(STAGES):
                inputs = {rel: digest for p in stage.parents for rel, digest in outputs[p].items()}
                forced = index >= rerun_from
                _lead(run, stage, inputs, forced)
                result = _run_stage(run, stage, inputs, forced)
                outputs[stage.name] = result.pop("outputs")
                stages.append(result)
                if stage.name == until:
                    return {"stages": stages}
            report = _build_report(config, run_dir, data, torch_device, stages, keys)
            write_reports(run_dir, report)
            distributed.finish()
        finally:
            logging.getLogger().removeHandler(file_log)
            file_log.close()
    return RunReport(report, run_dir)


def _lead(run: _Run, stage: StageDef, inputs: dict[str, str], forced: bool) -> None:
    """Rank 0, with several processes, before a training stage: tell the other ranks whether
    it runs and send them the files it reads (earlier stages' models, its resume points)."""
    if not distributed.active() or stage.name not in TRAINING:
        return
    key, run_dir = run.keys[stage.name], run.run_dir
    if forced:  # as _run_stage does, before the resume point is sent
        (run_dir / stage.name / "last.pt").unlink(missing_ok=True)
    runs = forced or cached_record(run_dir, stage.name, key, inputs) is None
    names = None
    if runs:
        earlier = TRAINING[: TRAINING.index(stage.name)]
        resume = sorted((run_dir / stage.name).glob("*.pt"))
        names = [f"{s}/model.pt" for s in earlier] + [
            str(p.relative_to(run_dir)) for p in resume if p.name != "model.pt"
        ]
    distributed.share_files(run_dir, names)


def _follow(run: _Run) -> dict:
    """A rank other than 0: run the training stages rank 0 runs, in its scratch folder, with
    the files rank 0 sends; then wait for rank 0 to finish the run."""
    try:
        for stage in STAGES:
            if stage.name in TRAINING and distributed.share_files(run.run_dir, []) is not None:
                _execute_stage(run, stage, {}, forced=True)  # forced: no cache here
        distributed.finish()
    finally:
        distributed.remove_scratch(run.run_dir)
    return {"stages": []}


@dataclass(frozen=True)
class _Run:
    """What every stage of one run shares: settings, folder, keys, device, data, cache."""

    config: PipelineConfig
    run_dir: Path
    keys: dict[str, str]
    device: torch.device
    data: Dataset
    progress: bool
    cache: StageCache | None


def _run_stage(run: _Run, stage: StageDef, inputs: dict[str, str], forced: bool) -> dict:
    """Reuse the stage from the run folder or the cache when its key and inputs match, else
    run it."""
    key, run_dir, cache = run.keys[stage.name], run.run_dir, run.cache
    record = None if forced else cached_record(run_dir, stage.name, key, inputs)
    if record is not None:
        log.info("%-8s cached (key %s)", stage.name, key)
        if cache is not None:
            _share(cache, record, run_dir, inputs)
        return _stage_result(record, cached=True)
    if forced:  # run from scratch: not even the epoch checkpoint of an earlier run is reused
        (run_dir / stage.name / "last.pt").unlink(missing_ok=True)
    if cache is None:
        return _stage_result(_execute_stage(run, stage, inputs, forced), cached=False)
    with cache.lock(stage.name, key):  # a parallel run with the same key waits here, then reuses it
        record = None if forced else cache.fetch(stage.name, key, inputs, run_dir)
        if record is not None:
            log.info("%-8s cached (key %s, from %s)", stage.name, key, cache.root)
            return _stage_result(record, cached=True)
        record = _execute_stage(run, stage, inputs, forced)
        cache.store(record, run_dir)
    return _stage_result(record, cached=False)


def _share(cache: StageCache, record: dict, run_dir: Path, inputs: dict[str, str]) -> None:
    """Put a stage finished in this run folder into the shared cache if it is not there."""
    with cache.lock(record["name"], record["key"]):
        if cache.lookup(record["name"], record["key"], inputs) is None:
            cache.store(record, run_dir)


def _stage_result(record: dict, cached: bool) -> dict:
    return {
        "name": record["name"],
        "key": record["key"],
        "seconds": record["seconds"],
        "cached": cached,
        "metrics": record["metrics"],
        "outputs": record.get("outputs", {}),
    }


def _execute_stage(
    run: _Run, stage: StageDef, inputs: dict[str, str], forced: bool = False
) -> dict:
    """Run one stage into the run folder; returns the record written to its stage.json.
    The stage may share parts of its work through the cache (StageContext.shared), unless forced."""
    config, run_dir, keys = run.config, run.run_dir, run.keys
    key = keys[stage.name]
    log.info("%-8s running (key %s)", stage.name, key)
    (run_dir / stage.name / "stage.json").unlink(missing_ok=True)
    ctx = StageContext(
        config,
        run_dir,
        stage.name,
        key,
        run.device,
        lambda: run.data,
        run.progress,
        cache=None if forced else run.cache,
    )
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    metrics = stage.run(ctx)
    seconds = round(time.perf_counter() - started, 3)
    record = {
        "name": stage.name,
        "key": key,
        "parents": {p: keys[p] for p in stage.parents},
        "inputs": inputs,
        "config": _plain(stage.settings(config)),
        "seconds": seconds,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "outputs": {str(p.relative_to(run_dir)): sha256_file(p) for p in ctx.outputs},
        "metrics": metrics,
    }
    write_json(ctx.stage_dir / "stage.json", record)
    log.info("%-8s done in %.1fs", stage.name, seconds)
    return record


def _build_report(config, run_dir, data, device, stages, keys) -> Report:
    by_name = {s["name"]: s for s in stages}
    artifacts: list[Artifact] = [dict(a) for a in by_name["verify"]["metrics"]["artifacts"]]
    add_comparisons(artifacts, baseline=DENSE)
    limits = limits_of(config.budget)
    if limits.any():
        check_artifacts(artifacts, limits, baseline=DENSE)
    report = {
        "pipeline": config.name,
        "config_hash": hash_object(config.model_dump(mode="json", by_alias=True)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": config.model.name or f"{config.model.path}:{config.model.class_name}",
        "dataset": {
            "name": data.name,
            "train_samples": data.size("train"),
            "val_samples": data.size("val"),
            "test_samples": data.size("test"),
            "kind": data.kind,
        },
        "device": str(device),
        "versions": versions(),
        "baseline": DENSE,
        "artifacts": artifacts,
        # Which inputs the pruned model still reads ({total, used, names, unit}; None when
        # its first layers do not read the input directly): compress.encode.inputs.
        "inputs": by_name["export"]["metrics"].get("inputs"),
        "training": {
            "dense_test_accuracy": by_name["train"]["metrics"]["test_accuracy"],
            "dense_val_accuracy": by_name["train"]["metrics"]["val_accuracy"],
            "pruned_sparsity": by_name["prune"]["metrics"]["sparsity"],
            "accuracy_after_prune": by_name["prune"]["metrics"]["test_accuracy"],
            "accuracy_after_finetune": by_name["finetune"]["metrics"]["test_accuracy"],
            "zero_weights_after_train": by_name["train"]["metrics"]["zero_weights"],
        },
        "stages": [
            {"name": s["name"], "key": s["key"], "seconds": s["seconds"], "cached": s["cached"]}
            for s in stages
        ],
        "total_seconds": round(sum(s["seconds"] for s in stages if not s["cached"]), 3),
    }
    if limits.any():
        report["budget"] = {k: v for k, v in asdict(limits).items() if v is not None}
    return report


def _attach_run_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler
