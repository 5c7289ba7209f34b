"""When to prune: once, or gradually while training (Zhu & Gupta's cubic schedule).

    masks = prune_oneshot(model, config.prune)                  # any registered method
    pruner = GradualPruner(model, config.prune)       # a training modifier (compress.modifier)
    fit(model, data, config.prune.gradual, run, "prune",
        modifiers_for(config.prune.gradual, "prune", pruner))

The gradual schedule ("To prune, or not to prune", 2017) raises a method's fraction from
`gradual.initial_amount` to its targets: s_t = s_f + (s_i - s_f) * (1 - t/n)^3, in
`gradual.steps` steps over the first `gradual.ramp` of training; pruned weights stay pruned.

`[prune] keep_inputs = k` (compress.pruning.inputs) follows the method's masks: at once in
prune_oneshot, at the last step of the ramp in GradualPruner (the rest of training then
reads those k inputs only). Both need the batch of inputs `sample`, to find the first layers.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from compress.config import PruneConfig
from compress.errors import CompressError
from compress.modifier import Modifier
from compress.pruning.base import PruningMethod
from compress.pruning.inputs import check_keep_inputs, input_scores, keep_strongest_inputs
from compress.pruning.masks import add_masks, ensure_masked, masks_of, prunable_layers
from compress.pruning.registry import get_method

log = logging.getLogger(__name__)


def method_for(config: PruneConfig) -> PruningMethod:
    """The registered method of a [prune] section, set up with it."""
    return get_method(config.method)(config)


def prune_oneshot(
    model: nn.Module,
    config: PruneConfig,
    sample: torch.Tensor | None = None,
    method: PruningMethod | None = None,
) -> dict[str, torch.Tensor]:
    """Prune once, leaving torch.nn.utils.prune re-parametrizations on the model.
    `sample`: a batch of inputs, which lets a method see the model's structure and how it
    runs (channels traces it; magnitude reads the BatchNorm after each layer). `method`:
    the config's method, when the caller wants to read its `summary()` afterwards."""
    method = method or method_for(config)
    method.setup(model, sample)
    if sample is not None:
        method.prepare(model, sample)
    layers = prunable_layers(model, config.layers)
    add_masks(layers, method.masks(layers, {n: method.setting(n) for n in layers}))
    if config.keep_inputs is not None:
        keep_strongest_inputs(model, config.keep_inputs, _input_shape(sample))
    return masks_of(model)


def _input_shape(sample: torch.Tensor | None) -> tuple[int, ...]:
    if sample is None:
        raise CompressError(
            "prune.keep_inputs needs a batch of inputs (sample) to find the layers that read them"
        )
    return tuple(sample.shape[1:])


def cubic_sparsity(step: int, steps: int, initial: float, final: float) -> float:
    """Zhu & Gupta's schedule: fast pruning early, slowing as the target is approached."""
    progress = min(max(step / steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruner(Modifier):
    """Training modifier: after each optimizer step, raises sparsity on the schedule, in
    `gradual.steps` steps over the first `gradual.ramp` of training. Its masks are on the
    layers from the start (all ones), so a checkpoint taken at any epoch resumes."""

    def __init__(self, model: nn.Module, config: PruneConfig, sample: torch.Tensor | None = None):
        self.config = config
        self.model = model
        self.sample = (
            sample  # see prune_oneshot; looked at again at each step (BatchNorm statistics move)
        )
        self.method = method_for(config)
        if not self.method.fraction:
            raise CompressError(
                f"gradual pruning needs a method whose {self.method.strength} is a fraction"
            )
        if config.keep_inputs is not None:  # a wrong k fails now, not after the ramp
            check_keep_inputs(config.keep_inputs, input_scores(model, _input_shape(sample)))
        self.method.setup(model, sample)  # before the masks: tracing sees the plain model
        self.layers = prunable_layers(model, config.layers)
        self.targets = {n: self.method.setting(n) for n in self.layers}
        self.done = -1
        for module in self.layers.values():
            ensure_masked(module)  # masks exist from the start: checkpoints resume

    def schedule_step(self, step: int, total_steps: int) -> int:
        gradual = self.config.gradual
        ramp_steps = max(1, int(total_steps * gradual.ramp))
        return min(gradual.steps, (step * gradual.steps) // ramp_steps)

    def after_step(self, step: int, total: int, lr: float) -> None:
        self(step, total)

    def __call__(self, step: int, total_steps: int) -> None:
        """Prune to the schedule's sparsity at `step` of `total_steps` (no-op between its steps)."""
        k = self.schedule_step(step, total_steps)
        if k <= self.done:
            return
        self.done = k
        gradual = self.config.gradual
        amounts = {
            n: cubic_sparsity(k, gradual.steps, gradual.initial_amount, target)
            for n, target in self.targets.items()
        }
        if self.sample is not None:
            self.method.prepare(self.model, self.sample.to(next(self.model.parameters()).device))
        add_masks(self.layers, self.method.masks(self.layers, amounts))
        if k == gradual.steps and self.config.keep_inputs is not None:
            keep_strongest_inputs(self.model, self.config.keep_inputs, tuple(self.sample.shape[1:]))
        log.debug("gradual prune step %d/%d: %s", k, gradual.steps, amounts)
