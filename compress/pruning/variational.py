"""`variational`: learn which weights to remove by sparse variational dropout
(Molchanov et al., ICML 2017).

    [prune]
    method = "variational"
    kl_weight = 1.0                 # the KL term's weight: higher removes more
    overrides = { "classifier.1" = { kl_weight = 3.0 } }   # per layer
    log_alpha_threshold = 3.0
    variational = { epochs = 10, optimizer = "adam", lr = 1e-3, kl_ramp = 0.5 }

    sparsifier = VariationalDropout(model, config, train_size)   # adds log sigma^2 per weight
    fit(model, data, config.variational, run, "prune", modifiers=[sparsifier])   # a modifier
    masks = prune_oneshot(model, config)   # log alpha > threshold -> masks (compress.pruning.masks)
    sparsifier.remove()                    # the noise parameters and hooks go

Each Linear/Conv weight w gets a learned log sigma^2 of the same shape (a parameter
`weight_log_sigma2` on the layer, so checkpoints and resuming carry it); alpha = sigma^2 / w^2
is its multiplicative Gaussian noise, trained without weight decay (decay would pull
log sigma^2 towards 0, i.e. towards noise). Training uses the local reparametrization trick (the
layer's output gets noise of variance x^2 * sigma^2, through a forward hook) and the loss
adds KL(q || log-uniform prior) / N with Molchanov et al.'s approximation
  -KL ~ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1.
A weight whose noise outweighs it (log alpha > threshold, 3 by default) carries no
information and is pruned: the method's `masks` reads each layer's learned log alpha, and
compress.pruning.masks applies them with torch.nn.utils.prune; `remove` then removes the
noise parameters and hooks. In eval mode the hooks already compute the layer with the
thresholded weights, so the accuracy seen during training is the pruned model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from compress.config import OptimConfig, PositiveInt, PruneConfig
from compress.errors import CompressError
from compress.modifier import Batch, Modifier
from compress.pruning.base import PruningMethod
from compress.pruning.masks import prunable_layers
from compress.pruning.registry import register_pruning_method

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_CLIP = 8.0  # keeps exp(log alpha) and its gradient finite
PARAM = "weight_log_sigma2"


def log_alpha(weight: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    return torch.clamp(
        log_sigma2 - torch.log(weight * weight + 1e-8), -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP
    )


def kl_divergence(log_alpha_values: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of KL(q(w) || log-uniform), summed over weights."""
    neg_kl = (
        K1 * torch.sigmoid(K2 + K3 * log_alpha_values) - 0.5 * F.softplus(-log_alpha_values) - K1
    )
    return -neg_kl.sum()


class VariationalTraining(OptimConfig):
    """[prune.variational]: training with the noise, from the trained model; the KL term's
    weight rises linearly from 0 to `kl_weight` over the first `kl_ramp` of the steps."""

    epochs: PositiveInt = 10
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    kl_ramp: float = Field(0.5, ge=0.0, le=1.0)
    init_log_sigma2: float = -10.0  # starts as the deterministic trained model

    @model_validator(mode="after")
    def _plain_training(self) -> VariationalTraining:
        if self.qat_bits or self.l1.lambda_:
            raise ValueError(
                "prune.variational trains without qat_bits and l1 (use them in [finetune])"
            )
        return self


class VariationalConfig(PruneConfig):
    method: Literal["variational"] = "variational"
    kl_weight: float = Field(1.0, gt=0.0)  # 1: the variational bound over the training set
    log_alpha_threshold: float = 3.0  # alpha = 20: the noise 4.5x the weight
    variational: VariationalTraining = VariationalTraining()


@register_pruning_method
class Variational(PruningMethod):
    """Masks from the log alpha that `VariationalDropout` training left on each layer."""

    name = "variational"
    Config = VariationalConfig
    strength = "kl_weight"  # what compress tune searches: a heavier KL term removes more
    tune_range = (0.1, 30.0)
    tune_geometric = True
    trains = True  # the prune stage trains with VariationalDropout before asking for masks

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        missing = [n for n, m in layers.items() if not hasattr(m, PARAM)]
        if missing:
            raise CompressError(
                f"method 'variational' needs its training first: {missing} have no log sigma^2"
            )
        threshold = self.config.log_alpha_threshold
        return {
            n: log_alpha(m.weight, getattr(m, PARAM)).detach() <= threshold
            for n, m in layers.items()
        }

    def sparsifier(self, model: nn.Module, train_size: int) -> VariationalDropout:
        return VariationalDropout(model, self.config, train_size, kl_weight=self.setting)


def _layer_output(
    module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
):
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
    if module.padding_mode != "zeros":
        raise CompressError(
            f"prune.method = 'variational' supports zero padding only, not {module.padding_mode!r}"
        )
    return conv(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def _standard_normal_like(t: torch.Tensor) -> torch.Tensor:
    """randn_like(t), drawn in t's memory order: normal_ on a channels_last tensor (the
    layout compress.training uses for CPU convolutions) runs about 9x slower."""
    if t.dim() != 4 or t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last):
        return torch.randn_like(t)
    return torch.randn(t.numel(), dtype=t.dtype, device=t.device).as_strided(t.shape, t.stride())


class VariationalDropout(Modifier):
    """Attaches log sigma^2 parameters and noise hooks to the prunable layers of a model; as
    a training modifier, adds the KL term to the loss and keeps the noise out of decay."""

    def __init__(
        self,
        model: nn.Module,
        config: VariationalConfig,
        train_size: int,
        kl_weight: Callable[[str], float] | None = None,
    ):
        """`kl_weight(layer)`: each layer's KL weight (Variational.setting: its [prune]
        overrides entry, else `config.kl_weight`)."""
        self.config = config
        self.training = config.variational  # what the training loop trains with
        self.train_size = train_size
        self.layers = prunable_layers(model, config.layers)
        self.kl_weights = {n: kl_weight(n) if kl_weight else config.kl_weight for n in self.layers}
        self.handles = []
        self._step_log_alphas: dict[nn.Module, torch.Tensor] = {}  # this step's, for its KL term
        for module in self.layers.values():
            if not hasattr(module, PARAM):
                init = torch.full_like(module.weight, config.variational.init_log_sigma2)
                module.register_parameter(PARAM, nn.Parameter(init))
            self.handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        la = log_alpha(module.weight, getattr(module, PARAM))
        if not module.training:  # evaluate as the pruned model will run
            keep = (la <= self.config.log_alpha_threshold).to(module.weight.dtype)
            return _layer_output(module, x, module.weight * keep, module.bias)
        self._step_log_alphas[module] = la
        # Local reparametrization: the output's variance is x^2 * sigma^2 with
        # sigma^2 = alpha * w^2 (through log alpha, so the clip bounds it).
        variance = _layer_output(module, x * x, torch.exp(la) * module.weight * module.weight, None)
        return output + torch.sqrt(variance + 1e-8) * _standard_normal_like(output)

    def kl(self) -> torch.Tensor:
        """Each layer's KL times its KL weight, summed, with the log alpha this step's forward
        pass computed (once)."""
        cached, self._step_log_alphas = self._step_log_alphas, {}
        return sum(
            self.kl_weights[n]
            * kl_divergence(cached[m] if m in cached else log_alpha(m.weight, getattr(m, PARAM)))
            for n, m in self.layers.items()
        )

    def no_decay_params(self) -> list[nn.Parameter]:
        return [getattr(m, PARAM) for m in self.layers.values()]

    def loss(self, step: int, total: int, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.kl_loss(step, total)

    def kl_loss(self, step: int, total_steps: int) -> torch.Tensor:
        """The KL term per training sample, its weights ramped up over the first `kl_ramp`."""
        ramp_steps = self.config.variational.kl_ramp * total_steps
        factor = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
        return (factor / self.train_size) * self.kl()

    @torch.no_grad()
    def log_alphas(self) -> dict[str, torch.Tensor]:
        return {n: log_alpha(m.weight, getattr(m, PARAM)).detach() for n, m in self.layers.items()}

    def remove(self) -> None:
        """Remove the noise parameters and hooks (after the masks are taken: not at the end
        of training, so this is not the modifier's `detach`)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        for module in self.layers.values():
            if hasattr(module, PARAM):
                delattr(module, PARAM)
