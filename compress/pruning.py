"""Pruning library: remove weights with torch.nn.utils.prune, once or on a gradual schedule.

The one owner of the torch.nn.utils.prune re-parametrization (masks on, masks off).

    masks = prune_oneshot(model, config.prune)            # threshold or magnitude
    pruner = GradualPruner(model, config.prune); fit(..., step_hook=pruner)

Methods: `threshold` removes |w| <= t (a custom BasePruningMethod: the near-zero weights that
L1 training leaves); `magnitude` removes the smallest `amount` fraction, ranked per layer or
over all layers (`scope`). The gradual schedule is Zhu & Gupta's cubic ramp ("To prune, or
not to prune", 2017): sparsity s_t = s_f + (s_i - s_f) * (1 - t/n)^3, each step applied
through torch.nn.utils.prune, pruned weights staying pruned. The stage saves the model with
its masks (compress.stages.prune); finetune holds them and makes the pruning permanent.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from compress.config import PruneConfig
from compress.errors import CompressError

log = logging.getLogger(__name__)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ThresholdPruning(tprune.BasePruningMethod):
    """Prune every entry with |w| <= threshold."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask * (t.abs() > self.threshold).to(default_mask.dtype)


def prunable_layers(model: nn.Module, names: list[str] | None = None) -> dict[str, nn.Module]:
    """Linear and Conv layers by module name (all of them, or the named ones)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    if names is None:
        return layers
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise CompressError(
            f"prune.layers names {unknown} that are not Linear/Conv layers of the model; "
            f"its layers are: {', '.join(layers)}"
        )
    return {n: layers[n] for n in names}


def check_layer_names(model: nn.Module, config: PruneConfig) -> None:
    layers = prunable_layers(model, config.layers)
    unknown = [n for n in config.overrides if n not in layers]
    if unknown:
        raise CompressError(
            f"prune.overrides names {unknown}, not among the pruned layers: {', '.join(layers)}"
        )


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current pruning masks, by layer name (bool tensors)."""
    return {
        name: module.weight_mask.detach().bool().cpu()
        for name, module in model.named_modules()
        if tprune.is_pruned(module) and hasattr(module, "weight_mask")
    }


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-attach saved masks with torch.nn.utils.prune (used by finetune)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        tprune.custom_from_mask(modules[name], "weight", mask.to(modules[name].weight.device))


def make_permanent(model: nn.Module) -> None:
    """prune.remove on every pruned layer; pruned entries become +0.0 (not -0.0: compresses better)."""
    for module in model.modules():
        if tprune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, tprune.BasePruningMethod):
                    tprune.remove(module, hook._tensor_name)
    positive_zeros(model)


@torch.no_grad()
def positive_zeros(model: nn.Module) -> None:
    for p in model.parameters():
        p.add_(0.0)  # -0.0 + 0.0 == +0.0 in IEEE arithmetic; other values unchanged


def sparsity_by_layer(model: nn.Module) -> dict[str, dict[str, float]]:
    """Zeros in each prunable layer's effective weight."""
    stats = {}
    for name, module in prunable_layers(model).items():
        w = module.weight
        zeros = int((w == 0).sum())
        stats[name] = {"params": w.numel(), "zeros": zeros, "sparsity": round(zeros / w.numel(), 6)}
    return stats


def sparsity_summary(model: nn.Module) -> dict:
    """Overall and per-layer fraction of zero weights in the prunable layers."""
    layers = sparsity_by_layer(model)
    zeros = sum(s["zeros"] for s in layers.values())
    params = sum(s["params"] for s in layers.values())
    return {"sparsity": round(zeros / max(params, 1), 6), "zero_weights": zeros, "layers": layers}


def _layer_setting(config: PruneConfig, name: str, attr: str) -> float:
    override = config.overrides.get(name)
    value = getattr(override, attr) if override is not None else None
    return getattr(config, attr) if value is None else value


def prune_oneshot(model: nn.Module, config: PruneConfig) -> dict[str, torch.Tensor]:
    """Prune once, leaving torch.nn.utils.prune reparametrizations on the model."""
    layers = prunable_layers(model, config.layers)
    if config.method == "threshold":
        for name, module in layers.items():
            ThresholdPruning.apply(module, "weight", threshold=_layer_setting(config, name, "threshold"))
    else:
        _magnitude(layers, config, {n: _layer_setting(config, n, "amount") for n in layers})
    return masks_of(model)


def _magnitude(layers: dict[str, nn.Module], config: PruneConfig, amounts: dict[str, float]) -> None:
    """Bring each layer (or the global pool) to its target fraction of zeros."""
    pooled = {n: m for n, m in layers.items() if config.scope == "global" and n not in config.overrides}
    for name, module in layers.items():
        if name not in pooled:
            _prune_layer_to(module, amounts[name])
    if pooled:
        total = sum(m.weight.numel() for m in pooled.values())
        target = int(round(amounts[next(iter(pooled))] * total))  # pooled layers share one amount
        already = sum(_masked_count(m) for m in pooled.values())
        # On pruned modules global_unstructured keeps the old masks and counts an integer
        # amount among the entries still unpruned, so the pruned set only grows.
        tprune.global_unstructured(
            [(m, "weight") for m in pooled.values()], pruning_method=tprune.L1Unstructured,
            amount=max(target - already, 0),
        )


def _masked_count(module: nn.Module) -> int:
    """Entries the layer's current pruning mask removes (0 if it has none)."""
    return int((module.weight_mask == 0).sum()) if hasattr(module, "weight_mask") else 0


def _prune_layer_to(module: nn.Module, amount: float) -> None:
    n = module.weight.numel()
    already = _masked_count(module)
    extra = int(round(amount * n)) - already
    if extra > 0 or not tprune.is_pruned(module):
        # On a pruned module, an integer amount counts among the entries still unpruned.
        tprune.l1_unstructured(module, "weight", amount=max(extra, 0))


def cubic_sparsity(step: int, steps: int, initial: float, final: float) -> float:
    """Zhu & Gupta's schedule: fast pruning early, slowing as the target is approached."""
    progress = min(max(step / steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruner:
    """Step hook for the training loop: raises sparsity in `gradual.steps` steps over the first `gradual.ramp` of training."""

    def __init__(self, model: nn.Module, config: PruneConfig):
        self.config = config
        self.layers = prunable_layers(model, config.layers)
        self.targets = {n: _layer_setting(config, n, "amount") for n in self.layers}
        self.done = -1
        for module in self.layers.values():
            if not tprune.is_pruned(module):
                tprune.identity(module, "weight")  # masks exist from the start: checkpoints resume

    def schedule_step(self, step: int, total_steps: int) -> int:
        gradual = self.config.gradual
        ramp_steps = max(1, int(total_steps * gradual.ramp))
        return min(gradual.steps, (step * gradual.steps) // ramp_steps)

    def __call__(self, step: int, total_steps: int) -> None:
        k = self.schedule_step(step, total_steps)
        if k <= self.done:
            return
        self.done = k
        gradual = self.config.gradual
        amounts = {
            n: cubic_sparsity(k, gradual.steps, gradual.initial_amount, target)
            for n, target in self.targets.items()
        }
        _magnitude(self.layers, self.config, amounts)
        log.debug("gradual prune step %d/%d: %s", k, gradual.steps, amounts)
