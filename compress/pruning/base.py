"""What a pruning method is: a typed [prune] section and a rule that computes masks.

    class Random(PruningMethod):
        name = "random"
        # a PruneConfig subclass: method: Literal["random"] = "random", its settings
        Config = RandomConfig
        strength = "amount"            # the setting that removes more weights as it grows
        def masks(self, layers, settings): ...   # layer name -> bool keep-mask

    register_pruning_method(Random)

A method only computes masks from the layers as they are (already-masked entries read as
zero); compress.pruning.masks applies them, so a mask only ever removes, and the oneshot
and gradual schedules (compress.pruning.schedule) work for every method.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from compress.config import PruneConfig


class PruningMethod:
    name: ClassVar[str]
    Config: ClassVar[type[PruneConfig]]
    # The setting (a field of Config, and of each [prune] overrides entry) that removes more
    # weights as it grows: what `compress tune` searches.
    strength: ClassVar[str]
    # True if `strength` is the fraction of a layer's weights removed: the gradual schedule
    # can ramp it, and tune scales per-layer overrides by density.
    fraction: ClassVar[bool] = False
    # True if it removes whole rows, channels or filters rather than single entries.
    structured: ClassVar[bool] = False
    # compress tune's default search range for `strength`, and whether to bisect it
    # geometrically (settings spanning decades, such as thresholds).
    tune_range: ClassVar[tuple[float, float]]
    tune_geometric: ClassVar[bool] = False
    # True if the method learns its masks by training: the prune stage then gets
    # `sparsifier(model, train_size)` (with `training`, the OptimConfig to train with, `loss`,
    # a term for the training loop, and `detach()`), trains, and asks for masks.
    trains: ClassVar[bool] = False

    def __init__(self, config: PruneConfig):
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, not {type(config).__name__}"
            )
        self.config = config

    def setting(self, layer: str) -> float:
        """`strength` for one layer: its [prune] overrides entry, else the section's."""
        override = self.config.overrides.get(layer)
        value = getattr(override, self.strength, None) if override is not None else None
        return getattr(self.config, self.strength) if value is None else value

    def setup(self, model: nn.Module, example: torch.Tensor | None) -> None:
        """Called once with the whole model (before any mask) and an example input batch,
        for methods that need the model's structure (compress.pruning.channels traces it)."""

    def prepare(self, model: nn.Module, sample: torch.Tensor) -> None:
        """Called with the whole model and a batch of inputs before `masks`, by schedules
        that have them (the prune stage does): for methods that need to look beyond the
        layers (magnitude: the BatchNorm after each). Default: nothing."""

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        """Keep-masks (bool, True = kept) for `layers` at the per-layer `settings` of `strength`."""
        raise NotImplementedError

    def summary(self) -> dict | None:
        """What the method chose beyond its masks, for the prune stage's record (channels
        with latency_vs_dense: each group's width and the latency estimates); None: nothing."""
        return None

    @classmethod
    def scale_override(cls, own: float, base: float, value: float) -> float:
        """A layer's override `own` when the section's `strength` moves from `base` to
        `value` (compress tune): in proportion, or for fractions, every layer's density
        scaled by the same factor."""
        if cls.fraction:
            density = (1 - own) * (1 - value) / (1 - base)
            return min(max(1 - density, 0.0), 0.999)
        return own * value / base if base > 0 else own


def keep_largest(scores: torch.Tensor, keep: torch.Tensor, remove: int) -> torch.Tensor:
    """`keep` with the `remove` lowest-scoring of its kept entries removed as well."""
    flat = keep.flatten().clone()
    alive = flat.nonzero().squeeze(1)
    remove = min(max(int(remove), 0), alive.numel())
    if remove:
        lowest = torch.topk(scores.flatten()[alive], k=remove, largest=False).indices
        flat[alive[lowest]] = False
    return flat.view_as(keep)
