"""Quantization-aware training: train against the weights that onnxruntime will store.

    fit(model, data, config, run, "train", modifiers=[FakeQuantization(bits=4)])  # as a modifier

    handles = attach_fake_quant(model, bits=4)   # or by hand: forward pre-hooks on Linear/Conv
    handles = attach_fake_quant(model, bits={"default": 4, "fc1": 2})   # per layer
    ... train ...
    detach(handles)

Each prunable layer's effective weight (after its pruning mask) is replaced in the forward
pass by its per-output-channel symmetric quantization at that layer's width, computed as
onnxruntime.quantization computes it for symmetric weights (int8: q in [-127, 127], scale =
max|w| / 127; int4: q in [-8, 7], scale = 2 max|w| / 15) and as the packed variant stores
the other widths (compress.bits.code_range), with a straight-through gradient. Zeros stay
zeros, so pruned weights are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from compress.bits import Widths, code_range, widths_for
from compress.modifier import Modifier
from compress.pruning.masks import PRUNABLE, ensure_masked


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantize-dequantize, with a straight-through gradient."""
    qmin, qmax = code_range(bits)
    absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (2 * absmax / (qmax - qmin)).view(-1, *([1] * (weight.dim() - 1)))
    quantized = torch.clamp(torch.round(weight / scale), qmin, qmax) * scale
    return weight + (quantized - weight).detach()


def attach_fake_quant(model: nn.Module, bits: Widths) -> list:
    """Fake-quantize every Linear/Conv weight in the forward pass, each at its width (one
    for all, or a table by module name: compress.bits); returns the hook handles."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    widths = widths_for(bits, layers, "qat_bits")
    for width in set(widths.values()):
        code_range(width)  # ValueError for a width no file stores

    def hook_for(width: int):
        def hook(module: nn.Module, inputs) -> None:
            # torch.nn.utils.prune's hook (registered earlier) has just set module.weight
            # from weight_orig * mask; quantize that.
            module.weight = fake_quantize(module.weight, width)

        return hook

    handles = []
    for name, module in layers.items():
        ensure_masked(module)  # weight becomes a computed attribute, recomputed before this hook
        handles.append(module.register_forward_pre_hook(hook_for(widths[name])))
    return handles


def detach(handles: list) -> None:
    for handle in handles:
        handle.remove()


class FakeQuantization(Modifier):
    """`qat_bits` as a training modifier: the hooks go on before the optimizer is made (the
    weights become `weight_orig`, which a resumed checkpoint holds) and off at the end."""

    def __init__(self, bits: Widths):
        self.bits = bits
        self.handles: list = []

    def attach(self, model: nn.Module, layout: torch.memory_format) -> None:
        self.handles = attach_fake_quant(model, self.bits)

    def detach(self, model: nn.Module) -> None:
        detach(self.handles)
        self.handles = []
