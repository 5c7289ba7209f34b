"""The optimizer and learning-rate schedule of an optimizer config ([train], [finetune], ...)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from compress.config import OptimConfig
from compress.modifier import Modifier


def param_groups(model: nn.Module, modifiers: list[Modifier]) -> list[dict]:
    """The trainable parameters, those a modifier names in `no_decay_params` in a group of
    their own without weight decay (decay would pull variational dropout's log sigma^2
    towards 0, i.e. towards noise)."""
    excluded = {id(p) for m in modifiers for p in m.no_decay_params()}
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trained if id(p) not in excluded]}]
    no_decay = [p for p in trained if id(p) in excluded]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: OptimConfig, steps_per_epoch: int):
    """Per-step schedule, so that cosine decays smoothly within epochs."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    elif config.schedule == "step":
        factor = lambda step: config.gamma ** ((step // steps_per_epoch) // config.step_size)  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
