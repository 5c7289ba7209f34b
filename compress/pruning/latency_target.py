"""A latency target for `channels`: how many units each group keeps, chosen greedily from a
per-layer latency table (NetAdapt, Yang et al., ECCV 2018).

    [prune]
    method = "channels"
    latency_vs_dense = 0.5    # the estimated latency over dense's to reach; amount is unused

    table = LayerLatencyTable(model, example, groups, WidthTimer())
    plans = [group_plan(g, scores[g.root], step=8) for g in groups]
    allocation = allocate_widths(plans, table.estimate, target=0.5)
    allocation.widths                               # {group root: units kept}

The model's latency is estimated as one call's overhead (an Identity graph timed alike) plus
the sum, over its Conv and Linear layers, of each layer alone timed in onnxruntime
(compress.pruning.widths.WidthTimer: batch 1, one thread, cached per machine) less that
overhead, at its input width and its output width. Counted once per layer instead, the
overhead kept mobilenet_v3_small's estimate above 0.52 of dense with every layer at 8
units (measured: 0.34), so a target of 0.5 cut every layer to its smallest width; the
other operations (activations, additions, pooling) are not counted, so the model measured
runs nearer dense than the estimate and the stage records both: a layer's input width is what the
group feeding it keeps, its output width what its own group keeps (a depthwise conv's input
is its output). Each group's candidate widths are its full width and the multiples of
`round_to` below it. From full widths, the greedy step takes the group whose move down to
its next candidate saves the most estimated time per unit of importance lost (the group
scores of the units it removes, lowest first, as `channels` ranks them), until the estimate
is at most the target times the dense estimate, or every group is at its smallest
candidate. Only the (input, output) pairs the search visits are timed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from compress.pruning.shrink import LAYERS

log = logging.getLogger(__name__)
TINY = 1e-12  # the importance lost by removing units already removed (their scores are -inf)


def candidate_widths(size: int, step: int) -> list[int]:
    """The widths a group of `size` units may keep, widest first: all of them, then the
    multiples of `step` below (kernel-friendly counts), down to `step` (at least one unit)."""
    below = range((size - 1) // step * step, 0, -step) if step < size else range(0)
    return [size, *below]


@dataclass
class GroupPlan:
    """One unit group's options: widths to keep (widest first) and the importance lost at
    each (the sum of the scores of the units removed to reach it, lowest first)."""

    root: str
    widths: list[int]
    lost: list[float]


def group_plan(root: str, scores: torch.Tensor, step: int) -> GroupPlan:
    """`root`'s candidate widths and their importance lost, from its units' `scores` (units
    already removed score -inf and cost nothing)."""
    ordered = torch.sort(scores.float(), stable=True).values
    ordered = torch.where(torch.isinf(ordered), torch.zeros_like(ordered), ordered)
    lost = torch.cat([torch.zeros(1), torch.cumsum(ordered, 0)])
    widths = candidate_widths(len(scores), step)
    return GroupPlan(root, widths, [float(lost[len(scores) - w]) for w in widths])


@dataclass
class Allocation:
    """What the greedy search chose, and the estimates it stopped at."""

    widths: dict[str, int]
    dense_ms: float
    estimated_ms: float
    target: float
    steps: int
    history: list[tuple[str, int, float]] = field(default_factory=list)  # (root, width, ms)

    @property
    def reached(self) -> bool:
        return self.estimated_ms <= self.target * self.dense_ms


def allocate_widths(
    plans: list[GroupPlan],
    estimate: Callable[[list[dict[str, int]]], list[float]],
    target: float,
) -> Allocation:
    """From full widths, repeatedly move the group whose next candidate saves the most
    estimated ms per unit of importance lost, until `estimate` is <= `target` x dense's.

    `estimate` maps allocations ({root: width}) to estimated ms, several at once (so a
    timer can measure the layers they need together)."""
    position = {p.root: 0 for p in plans}
    widths = {p.root: p.widths[0] for p in plans}
    dense = estimate([widths])[0]
    current, steps, history = dense, 0, []
    while current > target * dense:
        movable = [p for p in plans if position[p.root] + 1 < len(p.widths)]
        if not movable:
            break
        trials = [{**widths, p.root: p.widths[position[p.root] + 1]} for p in movable]
        times = estimate(trials)
        gains = []
        for p, ms in zip(movable, times, strict=True):
            saved = current - ms
            lost = p.lost[position[p.root] + 1] - p.lost[position[p.root]]
            gains.append((saved / max(lost, TINY), saved))  # nothing lost: any saving first
        best = max(range(len(movable)), key=gains.__getitem__)  # first of equals: plans' order
        chosen = movable[best]
        position[chosen.root] += 1
        widths = trials[best]
        current = times[best]
        steps += 1
        history.append((chosen.root, widths[chosen.root], current))
        log.debug("latency target: %s -> %d units, %.4f ms", *history[-1])
    return Allocation(widths, dense, current, target, steps, history)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    full_in: int
    full_out: int
    # (group root, units removed so far in the group's order -> this layer's rows or columns
    # removed with them): rows for the groups it belongs to, columns for those it reads
    rows: list[tuple[str, list[int]]]
    columns: list[tuple[str, list[int]]]


class LayerLatencyTable:
    """The model's estimated latency at any group widths: the sum of its layers' times alone,
    looked up (and timed when missing) at each layer's (input width, output width)."""

    def __init__(self, layers: dict[str, tuple[nn.Module, tuple[int, ...]]], groups, orders, timer):
        """`layers`: name -> (module, one sample's input shape); `groups`: the UnitGroups of
        compress.pruning.channels; `orders[root]`: its units, the first removed first."""
        self.timer = timer
        self.sizes = {g.root: g.size for g in groups}
        self.layers = []
        for name, (module, shape) in layers.items():
            if not isinstance(module, LAYERS):
                continue
            linear = isinstance(module, nn.Linear)
            full_in = shape[-1] if linear else shape[0]
            full_out = module.out_features if linear else module.out_channels
            rows, columns = [], []
            for g in groups:
                for member, dim, by_root in g.members:
                    if member != name:
                        continue
                    removed = [0]
                    for unit in orders[g.root]:
                        removed.append(removed[-1] + len(by_root[unit]))
                    (rows if dim == 0 else columns).append((g.root, removed))
            self.layers.append(_Layer(name, module, shape, full_in, full_out, rows, columns))
        self.looked_up: set[tuple[str, int, int]] = set()

    def widths(self, layer: _Layer, allocation: dict[str, int]) -> tuple[int, int]:
        """(input, output) width of `layer` when each group keeps `allocation[root]` units."""

        def gone(parts):
            return sum(
                r[self.sizes[root] - allocation.get(root, self.sizes[root])] for root, r in parts
            )

        out = max(1, layer.full_out - gone(layer.rows))
        depthwise = not isinstance(layer.module, nn.Linear) and layer.module.groups > 1
        return (out if depthwise else max(1, layer.full_in - gone(layer.columns))), out

    def estimate(self, allocations: list[dict[str, int]]) -> list[float]:
        """Estimated ms of the model at each allocation; the missing layer times are measured
        together first."""
        pairs = [[(layer, *self.widths(layer, a)) for layer in self.layers] for a in allocations]
        requests = {}  # (layer name, input width, output width) -> what the timer times
        for layer, width_in, width_out in (p for each in pairs for p in each):
            requests.setdefault(
                (layer.name, width_in, width_out),
                (layer.module, _shape_at(layer, width_in), width_out),
            )
        times = dict(zip(requests, self.timer.times(list(requests.values())), strict=True))
        self.looked_up.update(requests)
        # Each layer's time alone holds one call's overhead, which the model pays once.
        call = self.timer.overhead()
        return [
            call + sum(max(times[(layer.name, i, o)] - call, 0.0) for layer, i, o in each)
            for each in pairs
        ]

    @property
    def size(self) -> int:
        """The (layer, input width, output width) entries looked up so far."""
        return len(self.looked_up)


def _shape_at(layer: _Layer, width_in: int) -> tuple[int, ...]:
    shape = list(layer.input_shape)
    shape[-1 if isinstance(layer.module, nn.Linear) else 0] = width_in
    return tuple(shape)
