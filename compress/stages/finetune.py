"""Finetune stage: train with the pruning masks held, then make the pruning permanent.

The masks are re-attached with torch.nn.utils.prune, so pruned weights stay exactly zero
whatever the optimizer does to the underlying `weight_orig`; `prune.remove` then bakes them
in, and the zeros are written as +0.0.
"""

from __future__ import annotations

import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.errors import IntegrityError
from compress.pruning import apply_masks, make_permanent, sparsity_summary
from compress.stages.context import StageContext
from compress.training import final_accuracies, fit


def run(ctx: StageContext) -> dict:
    model, masks, spec = load_checkpoint(ctx.input("prune", "model.pt"))
    apply_masks(model, masks)
    config = ctx.config.finetune
    result = fit(
        model, ctx.data, config, ctx.run_settings(), desc="finetune",
        teacher_logits=ctx.teacher_logits(config),
    )
    model.cpu()
    make_permanent(model)
    modules = dict(model.named_modules())
    for name, mask in masks.items():  # the invariant the whole stage exists for
        if torch.any(modules[name].weight[~mask] != 0):
            raise IntegrityError(f"pruned weights of {name} changed during fine-tuning")
    save_checkpoint(ctx.output("model.pt"), model, spec, masks)
    return {
        **final_accuracies(result, model, ctx.data, ctx.config.data.eval_batch_size),
        **sparsity_summary(model),
        "epochs": result.history,
        "resumed_from_epoch": result.resumed_from_epoch,
    }
