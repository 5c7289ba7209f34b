"""Sparse variational dropout: learn which weights to remove (Molchanov et al., ICML 2017).

    sparsifier = VariationalDropout(model, config.prune.variational)   # adds log sigma^2 per weight
    fit(model, data, config.prune.variational, run, "prune", loss_term=sparsifier.loss)
    masks = sparsifier.prune(model)   # log alpha > threshold -> torch.nn.utils.prune masks

Each Linear/Conv weight w gets a learned log sigma^2 of the same shape (a parameter
`weight_log_sigma2` on the layer, so checkpoints and resuming carry it); alpha = sigma^2 / w^2
is its multiplicative Gaussian noise. Training uses the local reparametrization trick (the
layer's output gets noise of variance x^2 * sigma^2, through a forward hook) and the loss
adds KL(q || log-uniform prior) / N with Molchanov et al.'s approximation
  -KL ~ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1.
A weight whose noise outweighs it (log alpha > threshold, 3 by default) carries no
information and is pruned: `prune` turns those into masks through torch.nn.utils.prune
(`LogAlphaPruning`, a custom method), and removes the noise parameters and hooks. In eval
mode the hooks already compute the layer with the thresholded weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

from compress.config import VariationalConfig
from compress.errors import CompressError
from compress.pruning import masks_of, prunable_layers

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_CLIP = 8.0  # keeps exp(log alpha) and its gradient finite
PARAM = "weight_log_sigma2"


def log_alpha(weight: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    return torch.clamp(log_sigma2 - torch.log(weight * weight + 1e-8), -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def kl_divergence(log_alpha_values: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of KL(q(w) || log-uniform), summed over weights."""
    neg_kl = K1 * torch.sigmoid(K2 + K3 * log_alpha_values) - 0.5 * F.softplus(-log_alpha_values) - K1
    return -neg_kl.sum()


class LogAlphaPruning(tprune.BasePruningMethod):
    """Prune every weight whose learned log alpha exceeds `threshold`."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, log_alpha_values: torch.Tensor, threshold: float):
        self.log_alpha = log_alpha_values
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = (self.log_alpha.to(t.device) <= self.threshold).to(default_mask.dtype)
        return default_mask * keep


def _layer_output(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
    if module.padding_mode != "zeros":
        raise CompressError(f"prune.method = 'variational' supports zero padding only, not {module.padding_mode!r}")
    return conv(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


class VariationalDropout:
    """Attaches log sigma^2 parameters and noise hooks to the prunable layers of a model."""

    def __init__(self, model: nn.Module, config: VariationalConfig, train_size: int,
                 layers: list[str] | None = None):
        self.config = config
        self.train_size = train_size
        self.layers = prunable_layers(model, layers)
        self.handles = []
        for module in self.layers.values():
            if not hasattr(module, PARAM):
                init = torch.full_like(module.weight, config.init_log_sigma2)
                module.register_parameter(PARAM, nn.Parameter(init))
            self.handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        la = log_alpha(module.weight, getattr(module, PARAM))
        if not module.training:  # evaluate as the pruned model will run
            keep = (la <= self.config.log_alpha_threshold).to(module.weight.dtype)
            return _layer_output(module, x, module.weight * keep, module.bias)
        # Local reparametrization: the output's variance is x^2 * sigma^2 with
        # sigma^2 = alpha * w^2 (through log alpha, so the clip bounds it).
        variance = _layer_output(module, x * x, torch.exp(la) * module.weight * module.weight, None)
        return output + torch.sqrt(variance + 1e-8) * torch.randn_like(output)

    def kl(self) -> torch.Tensor:
        return sum(kl_divergence(log_alpha(m.weight, getattr(m, PARAM))) for m in self.layers.values())

    def loss(self, step: int, total_steps: int) -> torch.Tensor:
        """The KL term per training sample, its weight ramped up over the first `kl_ramp`."""
        ramp_steps = self.config.kl_ramp * total_steps
        factor = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
        return (self.config.kl_weight * factor / self.train_size) * self.kl()

    @torch.no_grad()
    def log_alphas(self) -> dict[str, torch.Tensor]:
        return {n: log_alpha(m.weight, getattr(m, PARAM)).detach() for n, m in self.layers.items()}

    def prune(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Threshold log alpha into torch.nn.utils.prune masks; remove noise parameters and hooks."""
        alphas = self.log_alphas()
        for handle in self.handles:
            handle.remove()
        self.handles = []
        for name, module in self.layers.items():
            delattr(module, PARAM)
            LogAlphaPruning.apply(module, "weight", log_alpha_values=alphas[name],
                                  threshold=self.config.log_alpha_threshold)
        return masks_of(model)
