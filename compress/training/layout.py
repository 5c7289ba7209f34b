"""The memory layout a model trains in: channels_last for 2-d convolutions on the CPU."""

from __future__ import annotations

import torch
import torch.nn as nn


def training_layout(
    model: nn.Module, device: torch.device, sample: torch.Tensor | None = None
) -> torch.memory_format:
    """channels_last for a model with 2-d convolutions trained on the CPU, else the usual
    layout. oneDNN's CPU kernels are faster on it: on LeNet-5 at batch 128, max pooling ran
    about 9x faster and each convolution with its backward about 1.4x; the values computed
    are the same up to float rounding. With a `sample` batch, a model whose forward pass
    fails on that layout (a `.view` of a convolution's output, say) keeps the usual one."""
    has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    only_4d = all(p.dim() <= 4 for p in model.parameters()) and all(
        b.dim() <= 4 for b in model.buffers()
    )
    if torch.device(device).type != "cpu" or not has_conv2d or not only_4d:
        return torch.contiguous_format
    if (
        sample is not None
        and sample.dim() == 4
        and not _runs_in(model, torch.channels_last, sample)
    ):
        return torch.contiguous_format
    return torch.channels_last


@torch.no_grad()
def _runs_in(model: nn.Module, layout: torch.memory_format, sample: torch.Tensor) -> bool:
    """Whether one evaluation-mode forward pass of `sample` works with the model in `layout`
    (the model is left as it was)."""
    was_training = model.training
    model.eval().to(memory_format=layout)
    try:
        model(sample.to(next(model.parameters()).device).contiguous(memory_format=layout))
        return True
    except RuntimeError:
        return False
    finally:
        model.to(memory_format=torch.contiguous_format).train(was_training)
