"""Feature selection: which inputs a (pruned) model still reads, and a model that takes only those.

    usage = input_usage(model, input_shape=(30,), feature_names=names)
    usage.summary()          # {"total": 30, "used": 9, "names": [...], "unit": "features", ...}
    usage.sentence()         # "uses 9 of 30 features: mean radius, ..."; a CNN reading all
                             # its channels: "reads every pixel of its one input channel"
    small, shape = reduced_model(model, usage)   # takes x[:, usage.indices] instead of x
    plot_usage(usage, "inputs.png")    # images with a Linear first layer: heatmap of the pixels

An input is unused when every weight of the first layer that reads it is zero. The first
layers are found by running the model once on a random batch and taking every Linear or
Conv whose input is the model's input itself (or, for a Linear, its flattened form):
- Linear on flattened input: one weight column per input element (a table's feature, an
  image's pixel in one channel); the element is used when its column has a non-zero weight.
- Linear on the unflattened input: one column per position on the last axis.
- Conv: one slice of kernels per input channel (grouped convs: the channel's group); a
  channel is used when any kernel weight on it is non-zero. Convolutions slide over every
  pixel, so only whole channels can drop out.
A model with some other operation before its first layer (a normalisation, a reshape that
reorders the input) gets no verdict (`input_usage` returns None): nothing can be said from
the weights alone.

Units reported: "features" for tables (F,), "pixels" (H*W positions, used when any channel
at that position is) for images whose first layer is a Linear, "channels" for images read
by a convolution.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from compress.pruning.inputs import first_layers, input_unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputUsage:
    """Per input element: how many non-zero first-layer weights read it (0 = unused)."""

    input_shape: tuple[int, ...]
    weights: torch.Tensor  # int64 [*input_shape]: non-zero first-layer weights per element
    unit: str  # features | pixels | channels
    axis: str  # what `indices` count: "elements" (of the flattened input) | "channels"
    first_layers: tuple[str, ...]
    feature_names: tuple[str, ...] | None = None

    @property
    def element_mask(self) -> torch.Tensor:
        return self.weights > 0

    @property
    def mask(self) -> torch.Tensor:
        """Used flag per unit: features [F], pixels [H, W] or channels [C]."""
        used = self.element_mask
        if self.unit == "pixels":
            return used.any(0)
        if self.unit == "channels":
            return used.flatten(1).any(1)
        return used

    @property
    def total(self) -> int:
        return self.mask.numel()

    @property
    def used(self) -> int:
        return int(self.mask.sum())

    @property
    def indices(self) -> list[int]:
        """What a reduced model takes: used flattened elements, or used channels."""
        if self.axis == "channels":
            return torch.nonzero(self.mask).flatten().tolist()
        return torch.nonzero(self.element_mask.flatten()).flatten().tolist()

    @property
    def names(self) -> list[str] | None:
        if self.unit != "features" or self.feature_names is None:
            return None
        return [self.feature_names[i] for i in torch.nonzero(self.mask).flatten().tolist()]

    def summary(self) -> dict:
        """What report.json keeps under `inputs`."""
        return {
            "total": self.total,
            "used": self.used,
            "names": self.names,
            "unit": self.unit,
            "first_layers": list(self.first_layers),
        }

    def sentence(self, max_names: int = 12) -> str:
        if self.unit == "channels" and self.used == self.total:
            # a convolution reads every pixel: "uses 1 of 1 channels" would say nothing
            channels = (
                "its one input channel" if self.total == 1 else f"all {self.total:,} input channels"
            )
            return f"reads every pixel of {channels}"
        text = f"uses {self.used:,} of {self.total:,} {self.unit}"
        names = self.names
        if names:
            shown = ", ".join(names[:max_names])
            more = f", ... ({len(names) - max_names} more)" if len(names) > max_names else ""
            text += f": {shown}{more}"
        return text

    def metadata(self) -> dict:
        """The `inputs` metadata of a file that takes only the used inputs."""
        return {
            "axis": self.axis,
            "indices": self.indices,
            "of": math.prod(self.input_shape) if self.axis == "elements" else self.input_shape[0],
            "names": self.names,
            "input_shape": list(self.input_shape),
        }


def _layer_weight_use(
    module: nn.Module, seen: torch.Tensor, input_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """Non-zero weights per input element for a first layer whose input is `seen`."""
    weight = module.weight.detach()
    nonzero = (weight != 0).to(torch.int64)
    if isinstance(module, nn.Linear):
        per_column = nonzero.sum(0)  # [in_features]
        if seen.dim() == 2 and seen.shape[1] == math.prod(input_shape):
            return per_column.reshape(input_shape)
        if tuple(seen.shape[1:]) == tuple(input_shape):  # applied along the last axis
            return per_column.expand(*input_shape).clone()
        return None
    if tuple(seen.shape[1:]) != tuple(input_shape):
        return None
    # Conv weight [out, in / groups, *kernel]: input channel c feeds the outputs of its group.
    groups, per_group = module.groups, weight.shape[1]
    out_per_group = weight.shape[0] // groups
    counts = torch.zeros(input_shape[0], dtype=torch.int64)
    for c in range(input_shape[0]):
        g = c // per_group
        counts[c] = nonzero[g * out_per_group : (g + 1) * out_per_group, c % per_group].sum()
    return counts.reshape(-1, *([1] * (len(input_shape) - 1))).expand(*input_shape).clone()


@torch.no_grad()
def input_usage(
    model: nn.Module, input_shape: tuple[int, ...], feature_names: tuple[str, ...] | None = None
) -> InputUsage | None:
    """Which inputs the model reads (see module docstring); None if its first layers
    do not read the input directly."""
    input_shape = tuple(int(d) for d in input_shape)
    modules = dict(model.named_modules())
    total: torch.Tensor | None = None
    first: list[str] = []
    for name, tensor in first_layers(model, input_shape).items():
        counts = _layer_weight_use(modules[name], tensor, input_shape)
        if counts is None:
            continue
        first.append(name)
        total = counts if total is None else total + counts
    if total is None:
        log.info(
            "cannot tell which inputs the model uses: no Linear or Conv reads its input directly"
        )
        return None
    unit = input_unit(input_shape, any(not isinstance(modules[n], nn.Linear) for n in first))
    axis = "channels" if unit == "channels" else "elements"
    names = tuple(feature_names) if feature_names is not None and unit == "features" else None
    return InputUsage(input_shape, total, unit, axis, tuple(first), names)


class UsedInputs(nn.Module):
    """The model on the used inputs only: x[:, indices] (flattened elements or channels).

    The unused inputs are put back as zeros: every first-layer weight on them is zero, so
    their value never reaches the output and the logits are the model's own."""

    def __init__(self, model: nn.Module, usage: InputUsage):
        super().__init__()
        self.model = model
        self.input_shape = usage.input_shape
        self.axis = usage.axis
        self.register_buffer("indices", torch.tensor(usage.indices, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.axis == "channels":
            full = x.new_zeros(n, *self.input_shape)
            full = full.index_copy(1, self.indices, x)
        else:
            full = x.new_zeros(n, math.prod(self.input_shape)).index_copy(1, self.indices, x)
            full = full.reshape(n, *self.input_shape)
        return self.model(full)

    @property
    def reduced_shape(self) -> tuple[int, ...]:
        if self.axis == "channels":
            return (len(self.indices), *self.input_shape[1:])
        return (len(self.indices),)


@torch.no_grad()
def reduced_model(model: nn.Module, usage: InputUsage) -> tuple[nn.Module, tuple[int, ...]]:
    """The model on its used inputs, and the shape of one reduced sample.

    When a single Linear reads the flattened input, its unused columns are cut out (a
    smaller file), provided the model then runs on [N, used] and gives the same logits
    (a model that reshapes its input to a fixed size cannot); otherwise `UsedInputs` puts
    the unused inputs back as zeros in front of the unchanged model."""
    fallback = UsedInputs(model, usage)
    modules = dict(model.named_modules())
    first = [modules[n] for n in usage.first_layers]
    if usage.axis != "elements" or len(first) != 1 or not isinstance(first[0], nn.Linear):
        return fallback, fallback.reduced_shape
    name, linear = usage.first_layers[0], first[0]
    if linear.in_features != math.prod(usage.input_shape):
        return fallback, fallback.reduced_shape
    import copy

    indices = torch.tensor(usage.indices, dtype=torch.int64)
    small = copy.deepcopy(model).eval()
    cut = nn.Linear(len(indices), linear.out_features, bias=linear.bias is not None)
    cut.weight.copy_(linear.weight.detach()[:, indices])
    if linear.bias is not None:
        cut.bias.copy_(linear.bias.detach())
    parent, _, child = name.rpartition(".")
    setattr(small.get_submodule(parent) if parent else small, child, cut)
    x = torch.randn(3, len(indices), generator=torch.Generator().manual_seed(0))
    try:
        same = torch.allclose(small(x), fallback.eval()(x), rtol=1e-4, atol=1e-5)
    except Exception:  # the model insists on its full input shape
        same = False
    return (small, (len(indices),)) if same else (fallback, fallback.reduced_shape)


def take_used(x: np.ndarray, metadata: dict) -> np.ndarray:
    """Full prepared inputs [N, *input_shape] -> what a reduced file takes (its `inputs`
    metadata)."""
    indices = np.asarray(metadata["indices"], dtype=np.int64)
    if metadata["axis"] == "channels":
        return np.ascontiguousarray(x[:, indices])
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, indices])


def plot_usage(usage: InputUsage, path: str | Path, title: str = "") -> Path | None:
    """Heatmap of the pixels still read (colour: non-zero first-layer weights per pixel, all
    channels together; white: unused). Only for images whose first layer is a Linear."""
    if usage.unit != "pixels":
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compress.files import atomic_path

    counts = usage.weights.sum(0).numpy().astype(float)
    counts[counts == 0] = np.nan  # unused pixels show as the background
    height, width = counts.shape
    fig, ax = plt.subplots(figsize=(4.5, 4.5 * height / width + 0.6), dpi=110)
    image = ax.imshow(counts, cmap="viridis", interpolation="nearest")
    ax.set_facecolor("white")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{usage.sentence()} ({', '.join(usage.first_layers)})", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="non-zero first-layer weights")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
