"""Trained weight sharing: a small per-layer codebook, the assignments held, the centroids trained.

    sharing = WeightSharing(model, bits=3)     # k-means per layer on the non-zero weights
    sharing = WeightSharing(model, bits={"default": 3, "fc1": 2})   # levels per layer
    fit(model, data, config, run, "share", modifiers=[sharing])  # trains the codebooks
    sharing.entropy()                          # bits per non-zero weight of the codes

A training modifier (compress.modifier): its hooks are forward pre-hooks on the layers,
put on when it is made; fit's end `detach`es it, which bakes: the weights become
codebook[codes], plain tensors again (under their pruning masks).

Deep Compression's trained quantization (Han et al., ICLR 2016): each layer's non-zero
weights are clustered into 2^bits - 1 levels by 1-D k-means (initialised linearly between
the smallest and largest weight, which keeps the rare large weights their own levels); level
0 is exactly zero and holds every pruned weight, so sparsity is kept. During training a
forward pre-hook sets weight = codebook[codes], so autograd sums the gradients of each
level's members into that level (the codes never change). The codebook is a parameter
`weight_codebook` of the layer, so checkpoints and resuming carry it. With `biases=True`
each bias gets a codebook of its own the same way (its values clustered, an exact zero
kept for exact zeros): at a few hundred weights per layer, float biases would otherwise be
a large part of the file.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from compress.bits import Widths, widest, widths_for
from compress.modifier import Modifier
from compress.pruning.masks import PRUNABLE, ensure_masked, recompute

CODEBOOK = "weight_codebook"  # the trainable non-zero levels
CODES = "weight_codes"  # buffer: 0 = the exact zero level, k = codebook[k - 1]


@torch.no_grad()
def kmeans_1d(
    values: torch.Tensor, clusters: int, iterations: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-d tensor, linear initialisation; returns (centroids, assignment)."""
    values = values.flatten().double()
    if values.numel() == 0:
        return torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.long)
    clusters = min(clusters, values.numel())
    centroids = torch.linspace(
        values.min().item(), values.max().item(), clusters, dtype=torch.float64
    )
    for _ in range(iterations):
        assign = (values[:, None] - centroids[None, :]).abs().argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, values)
        counts = torch.bincount(assign, minlength=clusters).double()
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    assign = (values[:, None] - centroids[None, :]).abs().argmin(1)
    return centroids.float(), assign


def code_entropy(codes: torch.Tensor) -> float:
    """Bits per non-zero weight: the empirical entropy of the non-zero codes."""
    nonzero = codes[codes != 0]
    if nonzero.numel() == 0:
        return 0.0
    p = torch.bincount(nonzero).double()
    p = p[p > 0] / nonzero.numel()
    return float(-(p * torch.log2(p)).sum())


def _full_codebook(module: nn.Module, tensor: str = "weight") -> torch.Tensor:
    levels = getattr(module, f"{tensor}_codebook")
    return torch.cat([levels.new_zeros(1), levels])


def _shared(module: nn.Module, tensor: str) -> torch.Tensor:
    return _full_codebook(module, tensor)[getattr(module, f"{tensor}_codes")]


def _shared_tensors(module: nn.Module, inputs) -> None:
    # Runs after torch.nn.utils.prune's hook: replace its tensors by the codebook's levels.
    for tensor in ("weight", "bias"):
        if hasattr(module, f"{tensor}_codes"):
            setattr(module, tensor, _shared(module, tensor))


class WeightSharing(Modifier):
    """Attaches a codebook and codes to every Linear/Conv layer of a (pruned) model."""

    def __init__(self, model: nn.Module, bits: Widths, biases: bool = False):
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
        self.widths = widths_for(bits, self.layers, "finetune.share.bits")
        if not all(1 <= b <= 8 for b in self.widths.values()):
            raise ValueError(f"weight sharing takes 1 to 8 bits, not {bits}")
        self.bits = bits
        self.tensors = ("weight", "bias") if biases else ("weight",)
        self.handles = []
        self.baked_codes: dict[str, torch.Tensor] = {}  # the codes, kept by bake for entropy()
        for name, module in self.layers.items():
            for tensor in self.tensors:
                if getattr(module, tensor, None) is None:
                    continue
                ensure_masked(module, tensor)  # the tensor becomes computed: the hook can set it
                if not hasattr(module, f"{tensor}_codebook"):
                    self._cluster(module, tensor, self.widths[name])
            self.handles.append(module.register_forward_pre_hook(_shared_tensors))

    def _cluster(self, module: nn.Module, tensor: str, bits: int) -> None:
        values = getattr(module, tensor).detach()
        nonzero = values != 0
        centroids, assign = kmeans_1d(values[nonzero], 2**bits - 1)
        codes = torch.zeros(values.shape, dtype=torch.long, device=values.device)
        codes[nonzero] = assign.to(values.device) + 1
        module.register_parameter(f"{tensor}_codebook", nn.Parameter(centroids.to(values.device)))
        module.register_buffer(f"{tensor}_codes", codes)

    def entropy(self) -> dict:
        """Bits per non-zero weight of the codes, per layer and over all layers."""
        codes = self.baked_codes or {n: getattr(m, CODES) for n, m in self.layers.items()}
        total = torch.cat([c.flatten() for c in codes.values()])
        return {
            "bits": self.bits,
            "code_entropy_bits": round(code_entropy(total), 4),
            "layers": {n: round(code_entropy(c), 4) for n, c in codes.items()},
            "max_bits": math.log2(2 ** widest(self.bits) - 1),
        }

    def detach(self, model: nn.Module) -> None:
        """The end of training: bake."""
        self.bake(model)

    @torch.no_grad()
    def bake(self, model: nn.Module) -> None:
        """Write codebook[codes] into the weights; remove the hooks, codebooks and codes."""
        if not self.handles:
            return  # baked already
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.baked_codes = {n: getattr(m, CODES) for n, m in self.layers.items()}
        for module in self.layers.values():
            for tensor in self.tensors:
                if not hasattr(module, f"{tensor}_codes"):
                    continue
                getattr(module, f"{tensor}_orig").copy_(_shared(module, tensor).detach())
                del module._parameters[f"{tensor}_codebook"]
                del module._buffers[f"{tensor}_codes"]
                recompute(module, tensor)
