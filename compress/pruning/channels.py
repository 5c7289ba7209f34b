"""`channels`: structured pruning of Linear neurons and Conv channels, with torch-pruning.

    [prune]
    method = "channels"
    amount = 0.5            # fraction of each layer's units (Linear) or channels (Conv) removed
    scope = "layer"         # "global": rank the units of all pruned layers together
    importance = "group"    # group: L2 norm over every coupled weight; l1: the layer's own rows
    schedule = "gradual"    # or oneshot, like magnitude
    latency_vs_dense = 0.5  # instead of amount: a latency target (compress.pruning.latency_target)

Which weights belong to one unit comes from torch-pruning's dependency graph
(`torch_pruning.DependencyGraph`): the unit's row in its layer, its column in every layer
that reads it (through pooling and flatten: many columns), and the layers coupled to it by
residual additions, BatchNorm and depthwise convolutions, which must lose the same channel.
Importance is `torch_pruning.importance`'s magnitude of that group. A removed unit is masked
like any pruned weight (rows and columns to zero, held through fine-tuning), so the
schedules and checkpoints of unstructured pruning work unchanged; `[export] shrink = true`
then removes the dead units physically (compress.pruning.shrink), and the model runs faster.
The model's output layer keeps its units (they are the classes); each layer keeps one.
Each layer keeps a multiple of `round_to` units (8 by default), rounded up: widths that
onnxruntime's blocked convolution kernels run fast (docs/methods.md, "Kernel-friendly widths").
With `latency_vs_dense`, each group's count comes from a latency target instead of `amount`:
chosen greedily from layer timings (compress.pruning.latency_target), once at setup; the
gradual schedule ramps each layer to its chosen count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch_pruning as tp
from pydantic import Field, model_validator

from compress.config import Fraction, PositiveInt, PruneConfig
from compress.errors import CompressError
from compress.pruning.base import PruningMethod
from compress.pruning.latency_target import (
    Allocation,
    LayerLatencyTable,
    allocate_widths,
    group_plan,
)
from compress.pruning.masks import current_mask, prunable_layers
from compress.pruning.registry import register_pruning_method
from compress.pruning.shrink import LAYERS, output_layers
from compress.pruning.widths import WidthTimer, fastest_width

log = logging.getLogger(__name__)


class ChannelsConfig(PruneConfig):
    method: Literal["channels"] = "channels"
    amount: Fraction = 0.5  # fraction of each layer's units or channels removed
    scope: Literal["global", "layer"] = "layer"  # global: one ranking over all pruned layers
    # group: torch-pruning's group L2 norm (every weight of the unit, in every coupled layer);
    # l1: the L1 norm of the unit's own incoming weights.
    importance: Literal["group", "l1"] = "group"
    # Each layer keeps a multiple of this many units (rounded up: never more removed than
    # `amount` asks), or all of them when the multiple would exceed it. onnxruntime's CPU
    # convolutions run in blocks of 8 or 16 channels: mobilenet_v3_small at 32x32 with 30%
    # of its channels removed ran 2.1x dense's latency at round_to 1, 0.74x at 8 (resnet18:
    # 2.1x, 0.38x; bench/widths.py, one thread). 1: the counts `amount` gives exactly.
    round_to: PositiveInt = 8
    # rounded: the counts above. measured: each layer keeps the largest multiple of
    # round_to, from (1 - widths_reach) x the chosen count up to the rounded one, that runs
    # within widths_tolerance of the fastest of them when the layer alone is timed in
    # onnxruntime here (compress.pruning.widths; cached per machine): the rounded count, or
    # fewer units where that is measurably faster. round_to = 1: any count.
    widths: Literal["rounded", "measured"] = "rounded"
    widths_reach: Fraction = 0.25
    widths_tolerance: float = Field(0.03, ge=0.0)
    # A latency target instead of `amount`: the model's estimated latency (the sum of its
    # layers, each timed alone here at its input and output widths, cached like `measured`)
    # at most this fraction of dense's, each group keeping its full width or a multiple of
    # round_to, chosen greedily by time saved per importance lost (NetAdapt;
    # compress.pruning.latency_target). amount and scope are unused then.
    latency_vs_dense: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _latency_target_rules(self) -> ChannelsConfig:
        if self.latency_vs_dense is None:
            return self
        if self.overrides:
            raise ValueError(
                "latency_vs_dense chooses every layer's width; it cannot be combined with "
                "overrides (set amount and overrides instead)"
            )
        if self.widths == "measured":
            raise ValueError(
                "latency_vs_dense times the layers itself; it needs widths = 'rounded' "
                "(its candidate widths are multiples of round_to)"
            )
        return self


@dataclass
class UnitGroup:
    """The units of one layer (and of the layers coupled to it), with what masks each one."""

    root: str  # the layer whose units these are
    size: int
    tp_group: object  # torch_pruning's Group, for its importance
    # (layer name, dim, root unit -> indices along dim): dim 0 rows (the unit's own weights),
    # dim 1 columns (the weights that read it)
    members: list[tuple[str, int, dict[int, list[int]]]]


def unit_groups(model: nn.Module, example: torch.Tensor) -> list[UnitGroup]:
    """Every prunable unit group of `model`, from torch-pruning's dependency graph."""
    names = {m: n for n, m in model.named_modules()}
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False
            )
    except Exception as exc:  # tracing a user's model can fail in many ways
        raise CompressError(
            f"prune.method = 'channels': torch-pruning cannot trace the model: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    groups = []
    for group in graph.get_all_groups(ignored_layers=output_layers(model, example)):
        members = []
        for item in group.items:
            module = item.dep.target.module
            if not isinstance(module, LAYERS):
                continue
            by_root: dict[int, list[int]] = {}
            for index, root in zip(item.idxs, item.root_idxs, strict=True):
                by_root.setdefault(int(root), []).append(int(index))
            depthwise = module.groups > 1 if not isinstance(module, nn.Linear) else False
            dim = 0 if graph.is_out_channel_pruning_fn(item.dep.handler) or depthwise else 1
            members.append((names[module], dim, by_root))
        root = names[group.items[0].dep.target.module]
        groups.append(UnitGroup(root, len(group.items[0].idxs), group, members))
    return groups


def _importance(kind: str, normalize: bool) -> tp.importance.Importance:
    normalizer = "mean" if normalize else None  # global ranking: comparable across layers
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(
            p=1, group_reduction="first", normalizer=normalizer
        )
    return tp.importance.GroupMagnitudeImportance(
        p=2, group_reduction="mean", normalizer=normalizer
    )


@register_pruning_method
class Channels(PruningMethod):
    name = "channels"
    Config = ChannelsConfig
    strength = "amount"
    fraction = True
    structured = True
    tune_range = (0.2, 0.9)

    groups: list[UnitGroup] | None = None
    # widths = "measured": the layers by name, one sample's input shape to each, the timer
    modules: dict[str, nn.Module] | None = None
    inputs: dict[str, tuple[int, ...]] | None = None
    timer: WidthTimer | None = None
    # latency_vs_dense: what the search chose, each group root's amount from it, the table
    allocation: Allocation | None = None
    amounts: dict[str, float] | None = None
    table: LayerLatencyTable | None = None

    def setup(self, model: nn.Module, example: torch.Tensor | None) -> None:
        if example is None:
            raise CompressError(
                "prune.method = 'channels' needs an example input to trace the model"
            )
        self.groups = unit_groups(model, example)
        if self.config.widths == "measured" or self.config.latency_vs_dense is not None:
            self.modules = dict(model.named_modules())
            self.inputs = input_shapes(model, example[:1])
            self.timer = WidthTimer()
        if self.config.latency_vs_dense is not None:
            self._allocate(prunable_layers(model, self.config.layers))

    def _allocate(self, layers: dict[str, nn.Module]) -> None:
        """Each group's width for the latency target (compress.pruning.latency_target), from
        the importance of its units now, ranked across groups (mean-normalized scores)."""
        keep = {n: current_mask(m) for n, m in layers.items()}
        groups = [g for g in self.groups if g.root in layers]
        importance = _importance(self.config.importance, normalize=True)
        scores = {g.root: self._scores(g, importance, keep) for g in groups}
        orders = {g.root: torch.argsort(scores[g.root], stable=True).tolist() for g in groups}
        timed = {n: (self.modules[n], shape) for n, shape in self.inputs.items()}
        self.table = LayerLatencyTable(timed, groups, orders, self.timer)
        plans = [group_plan(g.root, scores[g.root], self.config.round_to) for g in groups]
        self.allocation = allocate_widths(plans, self.table.estimate, self.config.latency_vs_dense)
        sizes = {g.root: g.size for g in groups}
        self.amounts = {r: 1 - w / sizes[r] for r, w in self.allocation.widths.items()}
        if not self.allocation.reached:
            log.warning(
                "prune: latency_vs_dense = %g not reached: every layer at its smallest "
                "candidate width is estimated at %.2f of dense",
                self.config.latency_vs_dense,
                self.allocation.estimated_ms / self.allocation.dense_ms,
            )

    def setting(self, layer: str) -> float:
        """With latency_vs_dense: the amount the search chose for the group `layer` is the
        root of (0 for the others, whose units their group's amount removes)."""
        if self.config.latency_vs_dense is None:
            return super().setting(layer)
        if self.amounts is None:
            raise RuntimeError("Channels.setting before setup(model, example)")
        return self.amounts.get(layer, 0.0)

    def summary(self) -> dict | None:
        if self.allocation is None:
            return None
        a = self.allocation
        sizes = {g.root: g.size for g in self.groups}
        return {
            "latency_vs_dense": a.target,
            "dense_estimated_ms": a.dense_ms,
            "estimated_ms": a.estimated_ms,
            "estimated_vs_dense": a.estimated_ms / a.dense_ms,
            "reached": a.reached,
            "steps": a.steps,
            "table_size": self.table.size,
            "widths": {r: {"size": sizes[r], "kept": w} for r, w in a.widths.items()},
        }

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        if self.groups is None:
            raise RuntimeError("Channels.masks before setup(model, example)")
        keep = {n: current_mask(m).clone() for n, m in layers.items()}
        groups = [g for g in self.groups if g.root in layers]
        overridden = {g.root: self._overridden(g, settings) for g in groups}
        pooled = [
            g
            for g in groups
            if self.config.scope == "global"
            and overridden[g.root] is None
            and self.config.latency_vs_dense is None  # each group its own chosen amount
        ]
        importance = _importance(self.config.importance, normalize=bool(pooled))
        scores = {g.root: self._scores(g, importance, keep) for g in groups}
        removed: dict[str, set[int]] = {}
        for g in groups:
            if g not in pooled:
                amount = overridden[g.root] if overridden[g.root] is not None else settings[g.root]
                if self.amounts is not None:  # a ramp never passes the chosen width
                    amount = min(amount, self.amounts.get(g.root, 0.0))
                removed[g.root] = _lowest([scores[g.root]], round(amount * g.size))[0]
        if pooled:
            target = round(
                settings[pooled[0].root] * sum(g.size for g in pooled)
            )  # one amount for the pool
            for g, chosen in zip(
                pooled, _lowest([scores[g.root] for g in pooled], target), strict=True
            ):
                removed[g.root] = chosen
        for g in groups:
            removed[g.root] = (
                self._measured(g, removed[g.root], scores[g.root])
                if self.config.widths == "measured"
                else _rounded(removed[g.root], scores[g.root], self.config.round_to)
            )
        for g in groups:
            for name, dim, by_root in g.members:
                if name not in keep:
                    # a coupled layer outside prune.layers: its unit reads a constant, shrink
                    # folds it
                    continue
                for unit in removed[g.root]:
                    keep[name].index_fill_(
                        dim, torch.tensor(by_root[unit], device=keep[name].device), False
                    )
        return keep

    def _measured(self, g: UnitGroup, removed: set[int], scores: torch.Tensor) -> set[int]:
        """`removed` rounded as `round_to` rounds it and, where the layer alone runs
        measurably faster with fewer units (a smaller multiple of round_to), the
        lowest-scoring of the units it would keep (compress.pruning.widths)."""
        step = self.config.round_to
        asked = g.size - len(removed)  # the count importance chose
        removed = _rounded(removed, scores, step)
        widest = g.size - len(removed)  # round_to's count: the widest candidate
        # Only multiples of round_to (and the widest): the layers this one feeds read its
        # count as their input channels, which the layer's own table does not see.
        low = max(1, math.ceil(asked * (1 - self.config.widths_reach)))
        candidates = [w for w in range(low, widest + 1) if w % step == 0 or w == widest]
        table = self.timer.table(self.modules[g.root], self.inputs[g.root], candidates)
        width = fastest_width(
            widest, table, self.config.widths_reach, self.config.widths_tolerance, low=low
        )
        order = sorted(set(range(g.size)) - removed, key=lambda unit: float(scores[unit]))
        return removed | set(order[: widest - width])

    def _overridden(self, g: UnitGroup, settings: dict[str, float]) -> float | None:
        """The amount of an `overrides` entry naming any layer whose units these are (coupled
        layers, such as the convs of a residual stream, share one group and one amount)."""
        for name, dim, _ in g.members:
            if dim == 0 and name in self.config.overrides and name in settings:
                return settings[name]
        return None

    @staticmethod
    def _scores(g: UnitGroup, importance, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """Importance per unit; -inf for units already removed (their rows all masked), so
        they are counted first and a higher amount removes only the difference."""
        with torch.no_grad():
            scores = importance(g.tp_group).detach().float().cpu()
        gone = torch.ones(g.size, dtype=torch.bool)
        for name, dim, by_root in g.members:
            if dim == 0 and name in keep:
                rows = keep[name].flatten(1) if keep[name].dim() > 1 else keep[name].unsqueeze(1)
                alive = rows.any(1)
                gone &= torch.tensor([not bool(alive[by_root[u]].any()) for u in range(g.size)])
        return torch.where(gone, torch.tensor(float("-inf")), scores)


def _lowest(scores: list[torch.Tensor], count: int) -> list[set[int]]:
    """The `count` lowest-scoring units over all groups, each group keeping at least one."""
    flat = torch.cat(scores)
    order = torch.argsort(flat, stable=True).tolist()
    offsets = [0]
    for s in scores:
        offsets.append(offsets[-1] + len(s))
    chosen: list[set[int]] = [set() for _ in scores]
    count = max(0, min(int(count), len(flat)))
    taken = 0
    for position in order:
        if taken >= count:
            break
        group = next(i for i in range(len(scores)) if offsets[i] <= position < offsets[i + 1])
        if len(chosen[group]) + 1 >= len(scores[group]):
            continue  # keep one unit per group
        chosen[group].add(position - offsets[group])
        taken += 1
    return chosen


def _rounded(removed: set[int], scores: torch.Tensor, round_to: int) -> set[int]:
    """`removed` less its highest-scoring units, so that the units kept are a multiple of
    `round_to` (or all of them, when that multiple would exceed the layer)."""
    size = len(scores)
    kept = size - len(removed)
    target = min(size, -(-kept // round_to) * round_to)
    if target == kept:
        return removed
    by_score = sorted(removed, key=lambda unit: float(scores[unit]))
    return set(by_score[: size - target])


def input_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of one sample's input to each Linear and Conv of `model` (one forward pass)."""
    shapes, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, LAYERS):

            def record(module, args, name=name):
                shapes[name] = tuple(args[0].shape[1:])

            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes
