"""Physical shrink: remove dead units and channels, exactly, so a pruned model is a smaller
dense one.

    report = shrink(model, input_shape=(1, 28, 28))     # in place; model in eval mode
    report["layers"]["fc1"]  ->  {"before": 500, "after": 317}

A hidden unit (a Linear neuron, a Conv output channel) is dead when
- its outgoing weights are all zero (every layer it feeds ignores it): it is removed; or
- its incoming weights are all zero: it outputs a constant (act(bias), through BatchNorm,
  pooling, ...), which is added into the biases of the layers it feeds, then it is removed.
Each removal keeps the logits (up to float rounding): the unstructured zeros left inside
the remaining weights stay. Which layers are coupled (residual additions, BatchNorm,
depthwise convolutions, flatten into a Linear) comes from torch-pruning's dependency graph,
which also does the surgery (`Group.prune`); the constants are read from a forward pass
on random inputs and folded only where that is exact (a constant across samples and
positions, fed to a Linear, or to a Conv without padding or with a zero constant).
The model's output layer keeps its units. Passes repeat until nothing more is dead
(removing a unit can leave an upstream unit without outgoing weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from compress.errors import CompressError

log = logging.getLogger(__name__)

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Modules a dead unit may pass through on its way to the layers it feeds: their channel k
# depends on channel k alone (torch-pruning prunes their parameters with the unit).
PASS_THROUGH = (nn.modules.batchnorm._BatchNorm,)


def units(model: nn.Module) -> dict[str, int]:
    """Output units (Linear) or channels (Conv) of every layer, by module name."""
    return {
        name: m.out_features if isinstance(m, nn.Linear) else m.out_channels
        for name, m in model.named_modules()
        if isinstance(m, LAYERS)
    }


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose output is the model's output (their units are the classes): found
    by a forward pass, or the last Linear/Conv layer if the output comes from elsewhere."""
    produced: dict[int, nn.Module] = {}
    handles = [
        m.register_forward_hook(lambda module, _, out: produced.__setitem__(id(out), module))
        for m in model.modules()
        if isinstance(m, LAYERS)
    ]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in handles:
            h.remove()
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    found = [produced[id(o)] for o in outputs if id(o) in produced]
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    return found or layers[-1:]


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1


@dataclass
class _Roles:
    """The members of one pruning group, by what a unit of the group is to them."""

    producers: list[tuple[nn.Module, dict[int, list[int]]]] = field(
        default_factory=list
    )  # weight rows
    consumers: list[tuple[nn.Module, dict[int, list[int]]]] = field(
        default_factory=list
    )  # weight columns
    depthwise: list[tuple[nn.Module, dict[int, list[int]]]] = field(default_factory=list)
    understood: bool = True


def _by_root(item) -> dict[int, list[int]]:
    """A group member's indices by the root unit they belong to (a conv channel feeding a
    Linear through flatten is many of the Linear's inputs)."""
    mapping: dict[int, list[int]] = {}
    for index, root in zip(item.idxs, item.root_idxs, strict=True):
        mapping.setdefault(int(root), []).append(int(index))
    return mapping


def _roles(group, graph: tp.DependencyGraph) -> _Roles:
    roles = _Roles()
    for item in group.items:
        module = item.dep.target.module
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        if isinstance(module, LAYERS):
            if _is_depthwise(module):
                if module.groups != module.in_channels or module.groups != module.out_channels:
                    roles.understood = (
                        False  # grouped (not depthwise) conv: channels mix within groups
                    )
                roles.depthwise.append((module, _by_root(item)))
            else:
                (roles.producers if out else roles.consumers).append((module, _by_root(item)))
        elif (
            isinstance(module, nn.Module)
            and any(True for _ in module.parameters(recurse=False))
            and not isinstance(module, PASS_THROUGH)
        ):
            roles.understood = (
                False  # a layer with parameters whose channel semantics we do not know
            )
    return roles


def _zero(weight: torch.Tensor, dim: int, idxs: list[int]) -> bool:
    return bool(torch.all(weight.index_select(dim, torch.tensor(idxs)) == 0))


@torch.no_grad()
def _consumer_inputs(
    model: nn.Module, consumers: list[nn.Module], example: torch.Tensor
) -> dict[nn.Module, torch.Tensor]:
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = [
        c.register_forward_pre_hook(lambda m, args: seen.__setitem__(m, args[0].detach()))
        for c in consumers
    ]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def _constant(x: torch.Tensor, idxs: list[int]) -> torch.Tensor | None:
    """Per-index constant of input slice x[:, idxs] (over samples and positions), or None."""
    part = x.index_select(1, torch.tensor(idxs)).transpose(0, 1).flatten(1)
    first = part[:, :1]
    return first.squeeze(1) if bool(torch.all(part == first)) else None


_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def _foldable(consumer: nn.Module, value: torch.Tensor) -> bool:
    """Whether a constant input slice of `consumer` can be replaced by a bias term exactly."""
    if bool(torch.all(value == 0)):
        return True  # contributes nothing
    if consumer.bias is None:
        return False
    # With padding the border sees zeros, not the constant: no longer one bias per channel.
    if isinstance(consumer, nn.Linear):
        return True
    if type(consumer).forward not in _CONV_FORWARDS:
        return False  # a conv with a forward of its own may pad its input first (PadConv2d)
    padding = consumer.padding
    return padding == "valid" if isinstance(padding, str) else all(p == 0 for p in padding)


def _fold(consumer: nn.Module, idxs: list[int], value: torch.Tensor) -> None:
    """Add a constant input slice's contribution to `consumer`'s bias."""
    if bool(torch.all(value == 0)):
        return
    weight = consumer.weight.index_select(1, torch.tensor(idxs))
    if isinstance(consumer, nn.Linear):
        consumer.bias.add_(weight @ value)
    else:
        consumer.bias.add_(weight.flatten(2).sum(2) @ value)


def _dead_units(
    group, graph, model, example, round_to: int = 1
) -> tuple[list[int], list[tuple[nn.Module, list[int], torch.Tensor]]]:
    """Root units of `group` that can go, and the bias folds their removal needs; with
    `round_to`, only so many that the units left are a multiple of it (dead units kept are
    exact: they read or feed only zeros)."""
    roles = _roles(group, graph)
    if not roles.understood:
        return [], []
    roots = sorted({int(i) for i in group.items[0].root_idxs})
    unused = set()
    if roles.consumers:
        unused = {
            k
            for k in roots
            if all(_zero(m.weight, 1, idx[k]) for m, idx in roles.consumers if k in idx)
        }
    constant = set()
    if roles.producers:
        constant = {
            k
            for k in roots
            if k not in unused
            and all(_zero(m.weight, 0, idx[k]) for m, idx in roles.producers if k in idx)
        }
    folds = []
    if constant and roles.consumers:
        inputs = _consumer_inputs(model, [m for m, _ in roles.consumers], example)
        for k in sorted(constant):
            plan = []
            for m, idx in roles.consumers:
                if k not in idx:
                    continue
                value = _constant(inputs[m], idx[k])
                if value is None or not _foldable(m, value):
                    break
                plan.append((m, idx[k], value))
            else:
                folds.append((k, plan))
    folded = {k for k, _ in folds}
    dead = sorted(unused | folded)
    if dead and len(dead) == len(roots):  # keep one unit: a layer of width 0 is not a model
        keep = max(folded) if folded else dead[-1]
        dead.remove(keep)
        folds = [(k, plan) for k, plan in folds if k != keep]
    left = len(roots) - len(dead)
    spared = min(len(roots), -(-left // round_to) * round_to) - left
    if spared:  # spare the dead units that need a fold first: they cost a bias change
        dead = sorted(sorted(dead, key=lambda k: k not in folded)[spared:])
        folds = [(k, plan) for k, plan in folds if k in dead]
    return dead, [step for _, plan in folds for step in plan]


@torch.no_grad()
def shrink(
    model: nn.Module,
    input_shape: tuple[int, ...],
    samples: int = 8,
    seed: int = 0,
    round_to: int = 1,
) -> dict:
    """Remove every dead unit and channel of `model` in place (see module docstring); with
    `round_to`, leave each layer a multiple of that many units (or all it has).

    Returns {"layers": {name: {"before", "after"}}, "removed": n, "passes": p}.
    """
    model.eval()
    before = units(model)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(samples, *input_shape, generator=generator)
    ignored = output_layers(model, example[:1])
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example[:1], verbose=False
            )
    except Exception as exc:  # tracing a user's model can fail in many ways
        raise CompressError(
            f"shrink: torch-pruning cannot trace the model: {type(exc).__name__}: {exc}"
        ) from None
    removed, passes = 0, 0
    while True:
        passes += 1
        removed_now = 0
        for group in graph.get_all_groups(ignored_layers=ignored):
            dead, folds = _dead_units(group, graph, model, example, round_to)
            if not dead:
                continue
            for consumer, idxs, value in folds:
                _fold(consumer, idxs, value)
            group.prune(idxs=dead)
            removed_now += len(dead)
        removed += removed_now
        if removed_now == 0:
            break
    after = units(model)
    layers = {name: {"before": before[name], "after": after[name]} for name in before}
    log.info(
        "shrink: removed %d units in %d passes: %s",
        removed,
        passes,
        ", ".join(
            f"{n} {v['before']}->{v['after']}"
            for n, v in layers.items()
            if v["before"] != v["after"]
        ),
    )
    return {"layers": layers, "removed": removed, "passes": passes}
