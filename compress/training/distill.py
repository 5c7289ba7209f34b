"""Knowledge distillation (`distill.alpha` > 0): the loss mixes in the KL divergence to a
teacher's softened predictions (Hinton et al.).

    Distillation(config.distill, teacher_logits=predict(teacher, x_train))  # one row per sample
    Distillation(config.distill, teacher=teacher)   # run on each batch (shifted images differ)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.config import DistillConfig
from compress.modifier import Batch, Modifier


def distillation_loss(
    logits: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(teacher_T || student_T)."""
    return (
        F.kl_div(
            F.log_softmax(logits / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


class Distillation(Modifier):
    """loss = (1 - alpha) * loss + alpha * distillation_loss(logits, the teacher's)."""

    def __init__(
        self,
        config: DistillConfig,
        teacher: nn.Module | None = None,
        teacher_logits: torch.Tensor | None = None,
    ):
        self.config = config
        self.teacher = teacher
        self.teacher_logits = teacher_logits

    def attach(self, model: nn.Module, layout: torch.memory_format) -> None:
        if self.teacher is not None:
            device = next(model.parameters()).device
            self.teacher.to(device, memory_format=layout).eval()

    def task_loss(self, loss: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(batch.x)
        else:
            target = self.teacher_logits[batch.index].to(logits.device)
        alpha = self.config.alpha
        return (1 - alpha) * loss + alpha * distillation_loss(
            logits, target, self.config.temperature
        )

    def detach(self, model: nn.Module) -> None:
        if self.teacher is not None:  # what follows sees the usual layout
            self.teacher.to(memory_format=torch.contiguous_format)
