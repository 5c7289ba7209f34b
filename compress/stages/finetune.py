"""Finetune stage: train with the pruning masks held, then make the pruning permanent.

The masks are re-attached with torch.nn.utils.prune, so pruned weights stay exactly zero
whatever the optimizer does to the underlying `weight_orig`; `prune.remove` then bakes them
in, and the zeros are written as +0.0. With `share.bits`, the fine-tuned weights are then
clustered into a per-layer codebook and its levels trained with the assignments held
(compress.sharing); the metrics give the entropy of the codes. After the last epoch the
BatchNorm statistics, if any, are measured again on training images, with the final weights
(compress.pruning.batchnorm), fake-quantized when the fine-tuning was (qat_bits).

With `qat_bits = "quantize"` and `[quantize] bits = "auto"`, each layer's width is chosen
first, on the validation split, from the pruned model as it comes from the prune stage
(compress.variants.allocate, on its ONNX export), and the fine-tuning trains each layer at
its width; the quantize stage's packed file then takes these widths. Chosen after a
fine-tuning at one width, the widths would be judged on weights trained for another.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.encode.onnx_tools import gemm_to_matmul
from compress.errors import IntegrityError
from compress.pruning import apply_masks, make_permanent, sparsity_summary
from compress.pruning.batchnorm import recalibrate_on_training_data
from compress.pruning.masks import recompute
from compress.qat import attach_fake_quant, detach
from compress.sharing import WeightSharing
from compress.stages.context import StageContext
from compress.stages.export import artifact_model, to_onnx
from compress.training import accuracies, final_accuracies, fit, modifiers_for
from compress.variants.allocate import allocate

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    model, masks, spec = load_checkpoint(ctx.input("prune", "model.pt"))
    config = ctx.config.finetune
    allocation = None
    if config.qat_bits == "quantize":  # [quantize] bits = "auto": chosen now, trained at
        allocation = widths_before_finetuning(ctx, copy.deepcopy(model), masks)
        config = config.model_copy(update={"qat_bits": allocation["bits"]})
    apply_masks(model, masks)
    modifiers = modifiers_for(config, "finetune", **ctx.teacher(config))
    result = fit(model, ctx.data, config, ctx.run_settings(), desc="finetune", modifiers=modifiers)
    model.cpu()
    sharing = {}
    if config.share.bits:
        sharing = share_weights(ctx, model, config)
        result.history += sharing.pop("epochs")
    recalibrated = 0
    if config.epochs > 0 or sharing:  # else this is prune's output, whose statistics prune measured
        bits = config.qat_bits if not sharing else 0  # shared levels replace the codes
        recalibrated = recalibrate(model, ctx.data, ctx.config.data.batch_size, bits)
    make_permanent(model)
    modules = dict(model.named_modules())
    for name, mask in masks.items():  # the invariant the whole stage exists for
        if torch.any(modules[name].weight[~mask] != 0):
            raise IntegrityError(f"pruned weights of {name} changed during fine-tuning")
    save_checkpoint(ctx.output("model.pt"), model, spec, masks)
    eval_batch = ctx.config.data.eval_batch_size
    return {
        # the shared weights', or the last epoch's measured with the statistics now replaced
        **(
            accuracies(model, ctx.data, eval_batch)
            if sharing or recalibrated
            else final_accuracies(result, model, ctx.data, eval_batch)
        ),
        **({"sharing": sharing} if sharing else {}),
        **({"allocation": allocation} if allocation else {}),
        **sparsity_summary(model),
        "epochs": result.history,
        "resumed_from_epoch": result.resumed_from_epoch,
        "batchnorm_recalibration_samples": recalibrated,
    }


def widths_before_finetuning(ctx: StageContext, pruned, masks) -> dict:
    """`[quantize] bits = "auto"` chosen on the pruned model (a copy of the prune stage's,
    its masks baked in, exported as the export stage exports it) and the validation split,
    before the quantization-aware fine-tuning trains each layer at its width."""
    data, quantize = ctx.data, ctx.config.quantize
    apply_masks(pruned, masks)
    make_permanent(pruned)
    proto = to_onnx(artifact_model(pruned, data), data.artifact_shape, ctx.config.export.opset)
    gemm_to_matmul(proto)
    images, labels = data.tensors("val")
    started = time.perf_counter()
    choice = allocate(
        proto,
        images.numpy().astype(np.float32),
        labels.numpy(),
        quantize.auto,
        quantize.packed.scales,
    )
    log.info(
        "bits = auto, chosen before fine-tuning: %s (validation drop %.2f points, %.1fs)",
        choice["bits"],
        choice["measured_drop"],
        time.perf_counter() - started,
    )
    return {**choice, "chosen": "before fine-tuning, on the pruned model"}


def recalibrate(model, data, batch_size: int, qat_bits, keep_better: bool = True) -> int:
    """The BatchNorm statistics measured again on training images; after quantization-aware
    fine-tuning (`qat_bits`: a width or a table, 0 for none) with the weights fake-quantized,
    as the quantized files hold them. Statistics of the float weights shift and rescale the
    quantized layers' outputs wrongly once BatchNorm is folded into them: DS-CNN fine-tuned
    at int4 (pipelines/kws.toml) lost 3 points of validation accuracy in its packed file that
    way. The float `pruned` file then carries the quantized weights' statistics."""
    handles = attach_fake_quant(model, qat_bits) if qat_bits else []
    try:
        return recalibrate_on_training_data(model, data, batch_size, keep_better=keep_better)
    finally:
        detach(handles)
        for module in model.modules():  # the float weights back in place of the quantized
            if hasattr(module, "weight_orig"):
                recompute(module)


def share_weights(ctx: StageContext, model, config) -> dict:
    """Cluster each layer into 2^bits - 1 levels plus zero, train the levels, bake them in."""
    sharing = WeightSharing(model, config.share.bits, biases=config.share.biases)
    before = accuracies(model, ctx.data, ctx.config.data.eval_batch_size)["val_accuracy"]
    share_config = config.model_copy(
        update={"epochs": config.share.epochs, "lr": config.share.lr, "qat_bits": 0}
    )
    settings = ctx.run_settings()
    settings.resume_path = (
        ctx.stage_dir / "share-last.pt"
    )  # its own resume point, beside fine-tuning's
    modifiers = modifiers_for(share_config, "share", sharing, **ctx.teacher(share_config))
    history = fit(
        model, ctx.data, share_config, settings, desc="share", modifiers=modifiers
    ).history
    model.cpu()  # fit's end baked the shared weights in (WeightSharing.detach)
    return {**sharing.entropy(), "val_accuracy_after_clustering": before, "epochs": history}
