"""Training modifiers: what a method adds to the one training loop (compress.training.fit),
as hooks on it (SparseML's pattern), each a no-op unless the modifier overrides it.

    class Clip(Modifier):
        def after_backward(self) -> None:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)

    fit(model, data, config, run, "finetune",
        modifiers=[*modifiers_for(config, "finetune"), Clip()])

The loop calls, in the order of the list:
- attach(model, layout): before the optimizer is made and a checkpoint resumed (add
  parameters or forward hooks: fake quantization; move a teacher to the device and layout);
- no_decay_params(): parameters trained without weight decay (variational dropout's noise);
- start(model, optimizer): after resuming, before the first step (L1 reads its groups here,
  so that groups zero in the checkpoint stay zero);
- epoch_start(epoch);
- task_loss(loss, logits, batch) -> the loss to train on (distillation mixes in the teacher);
- loss(step, total, logits, batch) -> a term added to it, or None (an L1 penalty, a KL term);
- after_backward(): gradients are there (L1 adds its penalty's gradient);
- after_step(step, total, lr): after the optimizer's step, `step` counting it, `lr` the one it
  used (the proximal L1 step, gradual pruning);
- epoch_end(epoch): after the epoch's evaluation, before its checkpoint;
- detach(model): after the last epoch, in reverse order (fake quantization's hooks go).

`step` is the number of optimizer steps done before (loss) or including (after_step) this
one, over all epochs; `total` is the number the whole fit will make. A modifier that adds
parameters in `attach` must add the same ones when a resumed run attaches it again.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn


class Batch(NamedTuple):
    """One training batch as the model sees it: inputs on the device (in the training
    layout), labels, and the samples' indices in the training split."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class Modifier:
    """Base class of training modifiers: every hook does nothing."""

    def attach(self, model: nn.Module, layout: torch.memory_format) -> None:
        pass

    def no_decay_params(self) -> list[nn.Parameter]:
        return []

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def epoch_start(self, epoch: int) -> None:
        pass

    def task_loss(self, loss: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return loss

    def loss(
        self, step: int, total: int, logits: torch.Tensor, batch: Batch
    ) -> torch.Tensor | None:
        return None

    def after_backward(self) -> None:
        pass

    def after_step(self, step: int, total: int, lr: float) -> None:
        pass

    def epoch_end(self, epoch: int) -> None:
        pass

    def detach(self, model: nn.Module) -> None:
        pass
