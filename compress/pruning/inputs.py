"""`[prune] keep_inputs = k`: keep the k strongest inputs, as scikit-learn's
`SelectFromModel(max_features=k)` does, by masking the first layer's weights on the others.

    layers = first_layers(model, input_shape)           # name -> the tensor it reads: the input
    scores = input_scores(model, input_shape)           # InputScores: unit, one norm per input
    kept = keep_strongest_inputs(model, 10, (30,))      # the 10 kept inputs' indices, masked

The first layers are the Linear and Conv layers whose input is the model's input itself (a
Linear may read it flattened), found by running the model once on a random batch; the
report's "uses k of F features" (compress.encode.inputs) finds them by the same function.
An input is what that sentence counts:
- a table's feature (input (F,)): its column in the first Linear;
- an image's pixel, when a Linear reads the flattened image: its column in every channel;
- a channel, when a Conv reads the image: its slice of every kernel (grouped convs: those of
  its group).
Its strength is the L2 norm of all those weights (the group norm, over every first layer),
taken as they are after the method's own masks; the k largest are kept, ties going to the
lower index. The other inputs' weights are masked to zero through compress.pruning.masks, so
fine-tuning holds them and the model reads exactly k inputs, unless the method had already
removed every weight of some of the k (then fewer: the prune stage warns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.pruning.masks import add_masks
from compress.pruning.probe import probe

FIRST_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def first_layers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The Linear and Conv layers whose input is the model's input (flattened or not), each
    with the tensor it read from one random batch of 2; in the order they ran."""
    input_shape = tuple(int(d) for d in input_shape)
    device = next(model.parameters(), torch.empty(0)).device
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, name=name: seen.setdefault(name, args[0].detach().clone())
        )
        for name, module in model.named_modules()
        if isinstance(module, FIRST_LAYER_TYPES)
    ]
    probe(model, x, hooks)
    return {
        name: tensor
        for name, tensor in seen.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.numel() == x.numel()
        and torch.equal(tensor.reshape(2, -1), x.reshape(2, -1))
    }


def input_unit(input_shape: tuple[int, ...], convolutions: bool) -> str:
    """What one input is: "features" (tables), "channels" (images a Conv reads: it slides
    over every pixel, so only channels can drop out), or "pixels" (images a Linear reads)."""
    if len(input_shape) == 1:
        return "features"
    return "channels" if convolutions else "pixels"


@dataclass(frozen=True)
class InputScores:
    unit: str  # features | pixels | channels
    scores: torch.Tensor  # float64 [inputs]: L2 norm of the first-layer weights on each input
    # first layer -> the input each entry of its weight reads (the weight's shape)
    units: dict[str, torch.Tensor]

    @property
    def total(self) -> int:
        return self.scores.numel()


def _units_read(
    module: nn.Module, seen: torch.Tensor, input_shape: tuple[int, ...], unit: str
) -> torch.Tensor | None:
    """For each entry of the layer's weight, the input (in `unit`) it reads; None when its
    weights do not map onto single inputs (a Linear along the last axis of an image)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        flattened = seen.dim() == 2 and seen.shape[1] == math.prod(input_shape)
        # beside a Conv (unit channels), a Linear's columns are not one channel each
        if not flattened or unit == "channels":
            return None
        column = torch.arange(weight.shape[1])
        if unit == "pixels":  # the flattened image is [C, H, W]: a pixel in every channel
            column = column % math.prod(input_shape[1:])
        return column.expand_as(weight)
    if unit != "channels" or tuple(seen.shape[1:]) != tuple(input_shape):
        return None
    # Conv weight [out, in / groups, *kernel]: output o reads the channels of its group.
    per_group = weight.shape[1]
    out_per_group = weight.shape[0] // module.groups
    first = torch.arange(weight.shape[0]) // out_per_group * per_group
    channel = first[:, None] + torch.arange(per_group)[None, :]
    return channel.reshape(*channel.shape, *([1] * (weight.dim() - 2))).expand_as(weight)


@torch.no_grad()
def input_scores(model: nn.Module, input_shape: tuple[int, ...]) -> InputScores:
    """Each input's strength (see the module docstring). A CompressError when no Linear or
    Conv reads the input directly, or the first layers' weights do not map onto inputs."""
    input_shape = tuple(int(d) for d in input_shape)
    seen = first_layers(model, input_shape)
    if not seen:
        raise CompressError(
            "prune.keep_inputs: no Linear or Conv of the model reads its input directly (it does "
            "something else to it first, e.g. a normalisation), so its inputs cannot be ranked"
        )
    modules = dict(model.named_modules())
    unit = input_unit(input_shape, any(not isinstance(modules[n], nn.Linear) for n in seen))
    total = math.prod(input_shape[1:]) if unit == "pixels" else input_shape[0]
    squares = torch.zeros(total, dtype=torch.float64)
    units = {}
    for name, tensor in seen.items():
        read = _units_read(modules[name], tensor, input_shape, unit)
        if read is None:
            raise CompressError(
                f"prune.keep_inputs: layer {name} ({type(modules[name]).__name__}) reads the input "
                f"in a way whose weights are not one group per {unit[:-1]}, "
                f"so {unit} cannot be selected"
            )
        weight = modules[name].weight.detach().double()
        squares.index_add_(0, read.flatten().to(squares.device), (weight * weight).flatten().cpu())
        units[name] = read
    return InputScores(unit, squares.sqrt(), units)


def check_keep_inputs(k: int, scores: InputScores) -> None:
    if not 1 <= k <= scores.total:
        raise CompressError(
            f"prune.keep_inputs = {k}, but the model reads {scores.total:,} {scores.unit}: "
            f"choose 1 to {scores.total:,}"
        )


def keep_strongest_inputs(model: nn.Module, k: int, input_shape: tuple[int, ...]) -> list[int]:
    """Mask every first-layer weight on all but the k strongest inputs; their indices, in order."""
    scores = input_scores(model, input_shape)
    check_keep_inputs(k, scores)
    # stable: of equal scores the lower index comes first, and is kept
    order = torch.argsort(scores.scores, descending=True, stable=True)
    kept = torch.sort(order[:k]).values
    modules = dict(model.named_modules())
    add_masks(modules, {name: torch.isin(read, kept) for name, read in scores.units.items()})
    return kept.tolist()


def strong_inputs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """How many inputs still have a non-zero first-layer weight."""
    return int((input_scores(model, input_shape).scores > 0).sum())
