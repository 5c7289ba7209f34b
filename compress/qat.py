"""Quantization-aware training: train against the weights that onnxruntime will store.

    fit(model, data, config, run, "train", modifiers=[FakeQuantization(bits=4)])  # as a modifier

    handles = attach_fake_quant(model, bits=4)   # or by hand: forward pre-hooks on Linear/Conv
    ... train ...
    detach(handles)

Each prunable layer's effective weight (after its pruning mask) is replaced in the forward
pass by its per-output-channel symmetric quantization, computed as onnxruntime.quantization
computes it for symmetric weights (int8: q in [-127, 127], scale = max|w| / 127; int4: q in
[-8, 7], scale = 2 max|w| / 15), with a straight-through gradient. Zeros stay zeros, so
pruned weights are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from compress.modifier import Modifier
from compress.pruning.masks import PRUNABLE, ensure_masked

QRANGE = {8: (-127, 127), 4: (-8, 7)}


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantize-dequantize, with a straight-through gradient."""
    qmin, qmax = QRANGE[bits]
    absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (2 * absmax / (qmax - qmin)).view(-1, *([1] * (weight.dim() - 1)))
    quantized = torch.clamp(torch.round(weight / scale), qmin, qmax) * scale
    return weight + (quantized - weight).detach()


def attach_fake_quant(model: nn.Module, bits: int) -> list:
    """Fake-quantize every Linear/Conv weight in the forward pass; returns the hook handles."""
    if bits not in QRANGE:
        raise ValueError(f"fake quantization supports {sorted(QRANGE)} bits, not {bits}")

    def hook(module: nn.Module, inputs) -> None:
        # torch.nn.utils.prune's hook (registered earlier) has just set module.weight from
        # weight_orig * mask; quantize that.
        module.weight = fake_quantize(module.weight, bits)

    handles = []
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            ensure_masked(
                module
            )  # weight becomes a computed attribute, recomputed before this hook
            handles.append(module.register_forward_pre_hook(hook))
    return handles


def detach(handles: list) -> None:
    for handle in handles:
        handle.remove()


class FakeQuantization(Modifier):
    """`qat_bits` as a training modifier: the hooks go on before the optimizer is made (the
    weights become `weight_orig`, which a resumed checkpoint holds) and off at the end."""

    def __init__(self, bits: int):
        self.bits = bits
        self.handles: list = []

    def attach(self, model: nn.Module, layout: torch.memory_format) -> None:
        self.handles = attach_fake_quant(model, self.bits)

    def detach(self, model: nn.Module) -> None:
        detach(self.handles)
        self.handles = []
