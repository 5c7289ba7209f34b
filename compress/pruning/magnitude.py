"""`magnitude`: remove the `amount` fraction of smallest-magnitude weights, per layer or global.

    [prune]
    method = "magnitude"
    amount = 0.9
    scope = "global"     # rank all pruned layers together; "layer": each layer to its amount

Layers with an `overrides` entry are always brought to their own amount alone. Fractions
count the weights already removed, so a later, higher amount removes only the difference
(the gradual schedule relies on it).

Weights are ranked by the magnitude the network applies: for a layer whose output goes
straight into a BatchNorm, |w| * |gamma| / sqrt(running_var + eps) of its output channel
(the BatchNorm-folded weight), which a rescaling of w does not change; for other layers |w|
(compress.pruning.batchnorm explains why). Models without BatchNorm rank as they always did.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from compress.config import Fraction, PruneConfig
from compress.pruning.base import PruningMethod, keep_largest
from compress.pruning.batchnorm import batchnorm_scales, folded_magnitude
from compress.pruning.masks import current_mask
from compress.pruning.registry import register_pruning_method


class MagnitudeConfig(PruneConfig):
    method: Literal["magnitude"] = "magnitude"
    amount: Fraction = 0.9
    scope: Literal["global", "layer"] = "global"  # rank over all layers, or within each


@register_pruning_method
class Magnitude(PruningMethod):
    name = "magnitude"
    Config = MagnitudeConfig
    strength = "amount"
    fraction = True
    tune_range = (0.5, 0.99)

    def __init__(self, config: PruneConfig):
        super().__init__(config)
        self.batchnorm_scales: dict[str, torch.Tensor] = {}

    def prepare(self, model: nn.Module, sample: torch.Tensor) -> None:
        self.batchnorm_scales = batchnorm_scales(model, sample)

    def scores(self, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """Importance of each weight: the lower, the sooner it goes."""
        return {
            n: folded_magnitude(m.weight, self.batchnorm_scales.get(n)) for n, m in layers.items()
        }

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        scores = self.scores(layers)
        keep = {n: current_mask(m) for n, m in layers.items()}
        pooled = [
            n for n in layers if self.config.scope == "global" and n not in self.config.overrides
        ]
        masks = {}
        for name in layers:
            if name not in pooled:
                target = int(round(settings[name] * keep[name].numel()))
                masks[name] = keep_largest(
                    scores[name], keep[name], target - int((~keep[name]).sum())
                )
        if pooled:
            total = sum(keep[n].numel() for n in pooled)
            target = int(round(settings[pooled[0]] * total))  # pooled layers share one amount
            already = sum(int((~keep[n]).sum()) for n in pooled)
            joint = keep_largest(
                torch.cat([scores[n].flatten() for n in pooled]),
                torch.cat([keep[n].flatten() for n in pooled]),
                target - already,
            )
            for name, part in zip(
                pooled, joint.split([keep[n].numel() for n in pooled]), strict=True
            ):
                masks[name] = part.view_as(keep[name])
        return masks
