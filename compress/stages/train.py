"""Train stage: build the model (optionally from user weights) and train it, with L1.

Output: train/model.pt, a self-describing checkpoint. Its BatchNorm statistics, if it has
any, are measured again on training images after the last epoch
(compress.pruning.batchnorm): the running averages kept while training can trail the
weights far enough to put the model at chance. With `[train] epochs = 0` the model is kept
as built or loaded, statistics included, for users who bring a trained model.
"""

from __future__ import annotations

import torch

from compress.checkpoint import build_from_spec, load_user_weights, model_spec, save_checkpoint
from compress.files import sha256_file
from compress.pruning import make_permanent, sparsity_summary
from compress.pruning.batchnorm import recalibrate_on_training_data
from compress.stages.context import StageContext
from compress.training import accuracies, final_accuracies, fit


def build_initial_model(ctx: StageContext):
    """The model as the pipeline describes it (checked against the data before the run)."""
    cfg = ctx.config
    spec = model_spec(cfg.model, cfg.base_dir, ctx.data.num_classes, ctx.data.input_shape)
    torch.manual_seed(cfg.data.seed)  # weight initialisation is part of the seeded run
    model = build_from_spec(spec)
    loaded = None
    if cfg.model.weights is not None:
        path = cfg.resolve(cfg.model.weights)
        loaded = load_user_weights(model, path, cfg.model.weights_partial)
        loaded = {"file": str(path), "sha256": sha256_file(path), **loaded}
    return model, spec, loaded


def frozen(model: torch.nn.Module, loaded: dict | None) -> list[torch.nn.Parameter]:
    """The parameters `[model] freeze_loaded` holds fixed: those the weights file filled."""
    if loaded is None:
        return []
    skipped = set(loaded["skipped"])
    return [p for name, p in model.named_parameters() if name not in skipped]


def run(ctx: StageContext) -> dict:
    model, spec, loaded = build_initial_model(ctx)
    config = ctx.config.train
    held = frozen(model, loaded) if ctx.config.model.freeze_loaded else []
    for p in held:
        p.requires_grad_(False)
    result = fit(model, ctx.data, config, ctx.run_settings(), desc="train")
    for p in held:
        p.requires_grad_(True)
    model.cpu()
    # Quantization-aware training trains through a weight re-parametrization; the
    # checkpoint holds plain weights, as every stage's input does.
    make_permanent(model)
    recalibrated = 0
    if config.epochs > 0:  # a model brought trained keeps the statistics it came with
        recalibrated = recalibrate_on_training_data(
            model, ctx.data, ctx.config.data.batch_size, keep_better=True
        )
    save_checkpoint(ctx.output("model.pt"), model, spec)
    eval_batch = ctx.config.data.eval_batch_size
    measured = (  # the last epoch's accuracies were measured with the statistics now replaced
        accuracies(model, ctx.data, eval_batch)
        if recalibrated
        else final_accuracies(result, model, ctx.data, eval_batch)
    )
    return {
        **measured,
        "epochs": result.history,
        "resumed_from_epoch": result.resumed_from_epoch,
        "batchnorm_recalibration_samples": recalibrated,
        # [model] weights: the file, its hash, and the model tensors it did not fill
        "weights": loaded,
        "frozen_params": sum(p.numel() for p in held),  # [model] freeze_loaded
        # How many weights training alone made exactly zero (proximal L1 makes exact zeros).
        **sparsity_summary(model),
    }
