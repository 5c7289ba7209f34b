"""The one owner of the torch.nn.utils.prune re-parametrization: masks on, masks off.

    layers = prunable_layers(model)         # Linear/Conv layers by name
    add_masks(layers, {"net.1": keep})      # weight = weight_orig * weight_mask
    masks = masks_of(model)                 # the masks, to save beside the weights
    make_permanent(model)                   # plain weights again, pruned entries +0.0
    apply_masks(model, masks)               # re-attach saved masks (finetune)
    ensure_masked(layer, "bias")            # an all-ones mask: bias computed before each call
    recompute(layer, "bias")                # ... and now, after its parts changed

While a layer is masked its state_dict holds `weight_orig` and `weight_mask` instead of
`weight`; `plain_state_dict` gives the state_dict of the plain model without touching it.
Pruning methods (compress.pruning.threshold, .magnitude, ...) only compute masks; every
change to a model's masks goes through this module (fake quantization and weight sharing,
which replace a computed tensor in a forward pre-hook, get it made computed here too).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from compress.config import PruneConfig
from compress.errors import CompressError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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


def is_masked(module: nn.Module) -> bool:
    return tprune.is_pruned(module) and hasattr(module, "weight_mask")


def current_mask(module: nn.Module) -> torch.Tensor:
    """The layer's keep-mask (bool, True = kept); all True for a layer without one."""
    if is_masked(module):
        return module.weight_mask.detach().bool()
    return torch.ones_like(module.weight, dtype=torch.bool)


def masked_count(module: nn.Module) -> int:
    """Entries the layer's current mask removes (0 if it has none)."""
    return int((module.weight_mask == 0).sum()) if is_masked(module) else 0


def ensure_masked(module: nn.Module, tensor: str = "weight") -> None:
    """Give the layer's `tensor` an all-ones mask if it has none: it becomes computed from
    `<tensor>_orig` before each forward pass (training hooks and gradual pruning rely on that
    from the first step; weight sharing then replaces it by its codebook's levels)."""
    if not hasattr(module, f"{tensor}_orig"):
        tprune.identity(module, tensor)


def recompute(module: nn.Module, tensor: str = "weight") -> None:
    """Set a masked `tensor` from its parts now, `<tensor>_orig * <tensor>_mask`, as the
    forward pre-hook does before each call (after a change to either part)."""
    setattr(module, tensor, getattr(module, f"{tensor}_orig") * getattr(module, f"{tensor}_mask"))


def add_masks(layers: dict[str, nn.Module], keep: dict[str, torch.Tensor]) -> None:
    """Remove, in each named layer, the entries whose `keep` is False. A mask only ever
    removes: entries an earlier mask removed stay removed."""
    for name, mask in keep.items():
        module = layers[name]
        mask = mask.to(device=module.weight.device, dtype=module.weight.dtype)
        if is_masked(module):
            module.weight_mask.mul_(mask)  # the forward pre-hook reads this buffer
            recompute(module)
        else:
            tprune.custom_from_mask(module, "weight", mask)


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current pruning masks, by layer name (bool tensors)."""
    return {
        name: module.weight_mask.detach().bool().cpu()
        for name, module in model.named_modules()
        if is_masked(module)
    }


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-attach saved masks (used by finetune)."""
    add_masks(dict(model.named_modules()), masks)


def make_permanent(model: nn.Module) -> None:
    """prune.remove on every pruned layer; pruned entries become +0.0 (not -0.0: compresses
    better)."""
    for module in model.modules():
        if tprune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, tprune.BasePruningMethod):
                    tprune.remove(module, hook._tensor_name)
    positive_zeros(model)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict the model has without masks: `weight` (= weight_orig * weight_mask) in
    place of `weight_orig` and `weight_mask`; the model itself keeps its masks."""
    full = model.state_dict()
    state = {}
    for key, value in full.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in full:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in full:
            key = key.removesuffix("_orig")
            value = value * full[f"{key}_mask"]
        value = value.detach().cpu()
        state[key] = (
            value + 0.0 if value.is_floating_point() else value
        )  # -0.0 -> +0.0, as make_permanent
    return state


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
