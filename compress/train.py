"""Train stage: build the model (optionally from user weights) and train it, with L1.

Output: train/model.pt, a self-describing checkpoint. With `[train] epochs = 0` the model
is kept as built or loaded, for users who bring a trained model.
"""

from __future__ import annotations

import torch

from compress.checkpoint import build_from_spec, load_user_weights, model_spec, save_checkpoint
from compress.data import Dataset
from compress.errors import CompressError
from compress.prune import sparsity_summary
from compress.stage import StageContext
from compress.training import evaluate, fit


def build_initial_model(ctx: StageContext):
    cfg = ctx.config
    spec = model_spec(cfg.model, cfg.base_dir, ctx.data.num_classes)
    torch.manual_seed(cfg.data.seed)  # weight initialisation is part of the seeded run
    model = build_from_spec(spec)
    if cfg.model.weights is not None:
        load_user_weights(model, cfg.resolve(cfg.model.weights))
    check_model_fits_data(model, ctx.data)
    return model, spec


def check_model_fits_data(model, data: Dataset) -> None:
    x = data.tensors("test", limit=2)[0]
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise CompressError(
            f"the model does not accept {data.name} images of shape {tuple(x.shape)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise CompressError(
            f"the model outputs shape {tuple(out.shape)} but {data.name} has "
            f"{data.num_classes} classes: expected (batch, {data.num_classes})"
        )


def run(ctx: StageContext) -> dict:
    model, spec = build_initial_model(ctx)
    config = ctx.config.train
    result = fit(model, ctx.data, config, ctx.run_settings(), desc="train")
    model.cpu()
    save_checkpoint(ctx.output("model.pt"), model, spec)
    accuracy = result.final.get("test_accuracy")
    if accuracy is None:
        accuracy = evaluate(model, ctx.data, "test", ctx.config.data.eval_batch_size, "cpu")
    return {
        "test_accuracy": accuracy,
        "epochs": result.history,
        "resumed_from_epoch": result.resumed_from_epoch,
        # How many weights training alone made exactly zero (proximal L1 makes exact zeros).
        **sparsity_summary(model),
    }
