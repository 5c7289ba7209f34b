"""Prune stage: train/model.pt -> prune/model.pt (weights and masks), with the [prune] method
(compress.pruning), once or gradually while training (the method's training modifier,
GradualPruner or VariationalDropout, beside those of its training config); then [prune]
keep_inputs, if set."""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.config import PruneConfig
from compress.encode.onnx_tools import make_session
from compress.latency import summarize, timed_rounds
from compress.pruning import (
    GradualPruner,
    check_keep_inputs,
    check_layer_names,
    input_scores,
    make_permanent,
    masks_of,
    method_for,
    plain_state_dict,
    prune_oneshot,
    sparsity_summary,
    strong_inputs,
)
from compress.pruning.batchnorm import recalibrate_on_training_data
from compress.pruning.shrink import shrink
from compress.stages.context import StageContext
from compress.stages.export import to_onnx
from compress.training import accuracies, fit, modifiers_for

log = logging.getLogger(__name__)
SAMPLE = 64  # training inputs a method may run through the model
MEASURE_CALLS, MEASURE_ROUNDS = 120, 12  # latency_vs_dense: the shrunk model against dense
NEARLY_ALL = 0.99  # a layer with this fraction of its weights removed gets a warning


def run(ctx: StageContext) -> dict:
    """Stage entry point: train/model.pt -> prune/model.pt (weights and masks)."""
    config = ctx.config.prune
    model, _, spec = load_checkpoint(ctx.input("train", "model.pt"))
    history = []
    recalibrated = 0
    chosen = None  # what the method reports beyond its masks (PruningMethod.summary)
    # A few training inputs: methods look at the model as it runs (magnitude: BatchNorms).
    sample = ctx.data.tensors("train", limit=SAMPLE)[0]
    if config.enabled:
        check_layer_names(model, config)
        method = method_for(config)
        if (
            method.trains
        ):  # e.g. variational dropout: train with its hooks, then masks from what it learned
            sparsifier = method.sparsifier(model, ctx.data.size("train"))
            modifiers = modifiers_for(
                sparsifier.training, "prune", sparsifier, **ctx.teacher(sparsifier.training)
            )
            history = fit(
                model, ctx.data, sparsifier.training, ctx.run_settings(), "prune", modifiers
            ).history
            model.cpu()
            prune_oneshot(model, config, sample)
            sparsifier.remove()
        elif config.schedule == "gradual":
            pruner = GradualPruner(model, config, sample)
            modifiers = modifiers_for(
                config.gradual, "prune", pruner, **ctx.teacher(config.gradual)
            )
            history = fit(
                model, ctx.data, config.gradual, ctx.run_settings(), "prune", modifiers
            ).history
            model.cpu()
            chosen = pruner.method.summary()
        else:
            prune_oneshot(model, config, sample, method)
            chosen = method.summary()
        # The BatchNorms still hold the unpruned layers' statistics (see
        # compress.pruning.batchnorm).
        recalibrated = recalibrate_on_training_data(model, ctx.data, ctx.config.data.batch_size)
    if chosen is not None and "estimated_vs_dense" in chosen:
        dense = load_checkpoint(ctx.input("train", "model.pt"))[0]
        chosen["measured"] = measured_vs_dense(model, dense, sample, ctx.config.export.opset)
        log.info(
            "prune: latency over dense estimated %.2f, measured %.2f [%.2f, %.2f]",
            chosen["estimated_vs_dense"],
            chosen["measured"]["vs_dense"],
            chosen["measured"]["vs_dense_low"],
            chosen["measured"]["vs_dense_high"],
        )
    masks = masks_of(model)
    measured = accuracies(model, ctx.data, ctx.config.data.eval_batch_size)
    summary = sparsity_summary(model)
    warnings = nearly_empty_layers(summary["layers"])
    if config.enabled and config.keep_inputs is not None:
        warnings += fewer_inputs(config.keep_inputs, strong_inputs(model, tuple(sample.shape[1:])))
    for warning in warnings:
        log.warning(warning)
    make_permanent(model)
    save_checkpoint(ctx.output("model.pt"), model, spec, masks)
    log.info(
        "pruned to %.2f%% sparsity; validation accuracy before fine-tuning %.4f",
        100 * summary["sparsity"],
        measured["val_accuracy"],
    )
    return {
        **measured,
        **summary,
        "epochs": history,
        "batchnorm_recalibration_samples": recalibrated,
        "warnings": warnings,
        **({"method_summary": chosen} if chosen is not None else {}),
    }


def measured_vs_dense(model: nn.Module, dense: nn.Module, sample: torch.Tensor, opset: int) -> dict:
    """The pruned model's latency over `dense`'s (the same model before pruning), shrunk
    (its dead units removed) and both exported, timed interleaved in onnxruntime at batch 1
    on one thread (compress.latency): one look at the real ratio beside an estimate."""
    shape = tuple(sample.shape[1:])
    shrunk = copy.deepcopy(dense).cpu().eval()
    shrunk.load_state_dict(plain_state_dict(model))  # the masks applied: weights, no masks
    shrink(shrunk, shape)
    sessions = [make_session(to_onnx(m, shape, opset), threads=1) for m in (dense, shrunk)]
    x = sample.cpu().numpy()
    row = summarize(timed_rounds(sessions, [x, x], MEASURE_CALLS, MEASURE_ROUNDS))[1]
    return {
        "vs_dense": row["vs_base"],
        "vs_dense_low": row["vs_base_low"],
        "vs_dense_high": row["vs_base_high"],
        "calls": MEASURE_CALLS,
        "rounds": MEASURE_ROUNDS,
    }


def check_inputs_to_keep(
    model: nn.Module, config: PruneConfig, input_shape: tuple[int, ...]
) -> None:
    """[prune] keep_inputs against the model, before any training: 1 <= k <= its inputs, and
    a first layer that reads them (compress.pruning.inputs)."""
    if config.enabled and config.keep_inputs is not None:
        check_keep_inputs(config.keep_inputs, input_scores(model, input_shape))


def fewer_inputs(k: int, read: int) -> list[str]:
    """A warning when the method left fewer than keep_inputs inputs with any weight."""
    if read >= k:
        return []
    return [
        f"prune: keep_inputs = {k}, but the method left only {read} inputs with non-zero "
        "first-layer weights, so the model reads those; lower its strength to keep more"
    ]


def nearly_empty_layers(layers: dict[str, dict], limit: float = NEARLY_ALL) -> list[str]:
    """A warning per layer that lost (nearly) all its weights: its output is (nearly) a
    constant, which the rest of the network cannot undo."""
    return [
        f"prune: layer {name} keeps {s['params'] - s['zeros']:,} of {s['params']:,} weights "
        f"({s['sparsity']:.1%} removed); lower the amount for it with [prune] overrides, "
        "or leave it out with [prune] layers"
        for name, s in layers.items()
        if s["sparsity"] >= limit
    ]
