"""The L1 term (`[train] l1`): a penalty on the loss or a proximal soft-threshold step, on
single weights or, with `l1.groups`, on whole structures (group lasso).

    l1 = L1(config)                       # a training modifier (compress.modifier)
    fit(model, data, config, run, "train", modifiers=[l1])

`L1Term` is the arithmetic; `L1` hooks it into the loop: the penalty's value in `loss`, its
gradient after backward, the proximal step after the optimizer's, reweighting at each
epoch's start. With `weight_decay` as well this is the elastic net.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.config import OptimConfig
from compress.modifier import Batch, Modifier
from compress.pruning.masks import PRUNABLE


def weight_params(model: nn.Module, which: str = "weights") -> list[torch.Tensor]:
    """Parameters the L1 term applies to: matrices and kernels (dim > 1), or everything.
    (Variational dropout's noise parameters never meet it: that training takes no l1.)"""
    params = [p for p in model.parameters() if p.requires_grad]
    return params if which == "all" else [p for p in params if p.dim() > 1]


@dataclass
class WeightGroups:
    """The groups of one weight tensor: its slices along `dim` (0: units, 1: inputs)."""

    param: torch.Tensor
    dim: int
    dead: torch.Tensor  # bool per slice: zeroed by the proximal step, held at zero since
    layer: nn.Module | None = None  # its layer, read for a pruning mask at each step

    def weight(self) -> torch.Tensor:
        """The weight the model runs: under a pruning mask, weight_orig * weight_mask. The
        pruned entries of weight_orig are no part of the model; counted in the norm they
        would keep a group whose live weights are all but zero from ever reaching zero."""
        mask = getattr(self.layer, "weight_mask", None)
        return self.param.detach() if mask is None else self.param.detach() * mask

    def norms(self) -> torch.Tensor:
        return self.weight().transpose(0, self.dim).flatten(1).norm(dim=1)

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """Per-slice values shaped to multiply the whole tensor."""
        shape = [1] * self.param.dim()
        shape[self.dim] = -1
        return values.view(shape)


def layer_weight(module: nn.Module) -> torch.Tensor:
    """The trained weight Parameter of a layer (weight_orig under a pruning or QAT hook)."""
    return getattr(module, "weight_orig", module.weight)


def weight_groups(model: nn.Module, kinds: tuple[str, ...]) -> list[WeightGroups]:
    """The structures group L1 acts on (see L1Config.groups).

    The last Linear/Conv layer is taken to be the output layer: its units are the classes,
    so it gets input groups only.
    """
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE)]
    groups = []
    for index, layer in enumerate(layers):
        param = layer_weight(layer)
        if not param.requires_grad:
            continue
        is_conv = not isinstance(layer, nn.Linear)
        dims = []
        if index < len(layers) - 1 and ("channels" if is_conv else "neurons") in kinds:
            dims.append(0)
        if "inputs" in kinds and (
            not is_conv or layer.groups == 1
        ):  # grouped convs: no whole-input slices
            dims.append(1)
        for dim in dims:
            group = WeightGroups(
                param,
                dim,
                torch.zeros(param.shape[dim], dtype=torch.bool, device=param.device),
                layer,
            )
            group.dead = group.norms() == 0  # structures already removed stay removed
            groups.append(group)
    return groups


class L1Term:
    """lambda * sum|w|, as a loss penalty or as a proximal (soft-threshold) step.

    With `l1.groups`, the group lasso lambda * sum_g ||w_g||_2 over structures instead: its
    proximal step scales each group by max(0, 1 - lr * lambda / ||w_g||), so whole neurons,
    channels or inputs reach exact zeros; a group once zero is held at zero (and its
    optimizer momentum cleared), or the next steps would grow it back.

    `reweighted` is the proximal step with a per-weight lambda_i = lambda / (|w_i| + eps),
    the weights taken at the start of each epoch (`start_epoch`).
    """

    def __init__(
        self, model: nn.Module, config: OptimConfig, optimizer: torch.optim.Optimizer | None = None
    ):
        self.lam = config.l1.lambda_
        self.method = config.l1.method
        self.eps = config.l1.eps
        self.groups = weight_groups(model, config.l1.group_kinds) if config.l1.group_kinds else None
        self.params = weight_params(model, config.l1.params) if self.groups is None else []
        self.optimizer = optimizer
        self.weights: list[torch.Tensor] | None = None  # reweighted: 1 / (|w| + eps), per epoch

    @property
    def active(self) -> bool:
        return self.lam > 0 and bool(self.params or self.groups)

    def penalty(self) -> torch.Tensor | None:
        if not (self.active and self.method == "penalty"):
            return None
        if self.groups is not None:
            return self.lam * torch.stack([g.norms().sum() for g in self.groups]).sum()
        # abs().sum(): on the CPU, _foreach_norm(params, 1) runs vector_norm per tensor, ~5x slower.
        return self.lam * torch.stack([p.abs().sum() for p in self.params]).sum()

    @torch.no_grad()
    def add_gradient(self) -> None:
        """grad += lambda * sign(w), in place: the penalty's gradient, bit for bit.

        The loop takes the penalty's value without autograd and adds its gradient here after
        backward: backpropagating through abs() costs several passes and allocations over
        every weight, about a third of a step for simplenet on a CPU; this costs two.
        Groups: grad += lambda * w_g / ||w_g|| (0 for a zero group, a subgradient).
        """
        if not (self.active and self.method == "penalty"):
            return
        if self.groups is not None:
            for g in self.groups:
                if g.param.grad is None:
                    g.param.grad = torch.zeros_like(g.param)
                norms = g.norms()
                inverse = torch.where(
                    norms > 0, 1.0 / norms.clamp_min(1e-30), torch.zeros_like(norms)
                )
                g.param.grad.add_(g.param * g.broadcast(inverse), alpha=self.lam)
            return
        for p in self.params:
            if p.grad is None:  # a weight the loss does not reach still gets the penalty's pull
                p.grad = torch.zeros_like(p)
        torch._foreach_add_(
            [p.grad for p in self.params], torch._foreach_sign(self.params), alpha=self.lam
        )

    @torch.no_grad()
    def start_epoch(self) -> None:
        """Reweighted L1: refresh each weight's lambda from its magnitude now."""
        if self.active and self.method == "reweighted":
            self.weights = [1.0 / (p.abs() + self.eps) for p in self.params]

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """w <- sign(w) * max(|w| - lr * lambda_i, 0): the exact-zero-making L1 step."""
        if not (self.active and self.method in ("proximal", "reweighted")):
            return
        shrink = lr * self.lam
        if self.groups is not None:
            self._group_step(shrink)
            return
        if self.method == "reweighted":
            if self.weights is None:
                self.start_epoch()
            for p, w in zip(self.params, self.weights, strict=True):
                p.copy_(torch.sign(p) * torch.clamp_min(p.abs() - shrink * w, 0.0))
            return
        for p in self.params:
            p.copy_(torch.sign(p) * torch.clamp_min(p.abs() - shrink, 0.0))

    def _group_step(self, shrink: float) -> None:
        for g in self.groups:
            norms = g.norms()
            keep = torch.clamp_min(1.0 - shrink / norms.clamp_min(1e-30), 0.0)
            keep[g.dead] = 0.0
            g.param.mul_(g.broadcast(keep))
            g.dead |= keep == 0
            if g.dead.any():
                self._clear_state(g)

    def _clear_state(self, g: WeightGroups) -> None:
        """Zero the optimizer's running averages (momentum, Adam's moments) of dead groups."""
        state = self.optimizer.state.get(g.param, {}) if self.optimizer is not None else {}
        alive = g.broadcast((~g.dead).to(g.param.dtype))
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == g.param.shape:
                value.mul_(alive)


class L1(Modifier):
    """The L1 term of an optimizer config as a training modifier."""

    def __init__(self, config: OptimConfig):
        self.config = config
        self.term: L1Term | None = None

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.term = L1Term(model, self.config, optimizer)

    def epoch_start(self, epoch: int) -> None:
        self.term.start_epoch()

    def loss(
        self, step: int, total: int, logits: torch.Tensor, batch: Batch
    ) -> torch.Tensor | None:
        with torch.no_grad():  # the value only: after_backward adds its gradient
            return self.term.penalty()

    def after_backward(self) -> None:
        self.term.add_gradient()

    def after_step(self, step: int, total: int, lr: float) -> None:
        self.term.proximal_step(lr)
