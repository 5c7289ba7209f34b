"""`threshold`: remove every weight with |w| <= threshold (the near-zero weights L1 training
leaves).

[prune]
method = "threshold"
threshold = 0.03
overrides = { "net.1" = { threshold = 0.05 } }
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from compress.config import PruneConfig
from compress.pruning.base import PruningMethod
from compress.pruning.registry import register_pruning_method


class ThresholdConfig(PruneConfig):
    method: Literal["threshold"] = "threshold"
    threshold: float = Field(1e-3, ge=0.0)


@register_pruning_method
class Threshold(PruningMethod):
    name = "threshold"
    Config = ThresholdConfig
    strength = "threshold"
    tune_range = (1e-3, 0.1)
    tune_geometric = True

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        return {n: m.weight.detach().abs() > settings[n] for n, m in layers.items()}
