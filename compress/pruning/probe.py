"""One forward pass to look inside a model: hooks record what they see, then go.

hooks = [layer.register_forward_pre_hook(record) for layer in layers]
probe(model, x, hooks)   # eval mode for the pass; training mode and hooks restored after
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle


def probe(model: nn.Module, x: torch.Tensor, hooks: list[RemovableHandle]) -> None:
    """Run `x` through `model` once in eval mode, then remove `hooks` and put the model back
    in the mode it was in (also when the pass fails)."""
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
