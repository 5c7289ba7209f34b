"""Prune stage: train/model.pt -> prune/model.pt (weights and masks), with the [prune] method
(compress.pruning), once or gradually while training."""

from __future__ import annotations

import logging

import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.pruning import (
    GradualPruner,
    check_layer_names,
    make_permanent,
    masks_of,
    prune_oneshot,
    sparsity_summary,
)
from compress.stages.context import StageContext
from compress.training import accuracies, fit

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    """Stage entry point: train/model.pt -> prune/model.pt (weights and masks)."""
    config = ctx.config.prune
    model, _, spec = load_checkpoint(ctx.input("train", "model.pt"))
    history = []
    if config.enabled:
        check_layer_names(model, config)
        example = torch.zeros(1, *ctx.data.input_shape)  # structured methods trace the model with it
        if config.schedule == "gradual":
            pruner = GradualPruner(model, config, example)
            history = fit(
                model, ctx.data, config.gradual, ctx.run_settings(), "prune",
                step_hook=pruner, teacher_logits=ctx.teacher_logits(config.gradual),
            ).history
            model.cpu()
        else:
            prune_oneshot(model, config, example)
    masks = masks_of(model)
    measured = accuracies(model, ctx.data, ctx.config.data.eval_batch_size)
    summary = sparsity_summary(model)
    make_permanent(model)
    save_checkpoint(ctx.output("model.pt"), model, spec, masks)
    log.info("pruned to %.2f%% sparsity; validation accuracy before fine-tuning %.4f",
             100 * summary["sparsity"], measured["val_accuracy"])
    return {**measured, **summary, "epochs": history}
