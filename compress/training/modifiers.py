"""The training modifiers a stage's optimizer config asks for (compress.modifier).

    modifiers = modifiers_for(config, "finetune", **ctx.teacher(config))     # L1, distill, QAT
    modifiers = modifiers_for(config.gradual, "prune", pruner)               # and a method's own

The order is the order of their hooks: the L1 term before the others' loss terms and
after-step hooks (a gradual pruner then masks the weights L1 has just shrunk), fake
quantization last.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from compress.config import OptimConfig
from compress.errors import CompressError
from compress.modifier import Modifier
from compress.qat import FakeQuantization
from compress.training.distill import Distillation
from compress.training.l1 import L1


def modifiers_for(
    config: OptimConfig,
    desc: str,
    *extra: Modifier,
    teacher: nn.Module | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> list[Modifier]:
    """L1 (`l1.lambda` > 0), distillation (`distill.alpha` > 0: a `teacher` model or its
    `teacher_logits`, one row per training sample), `extra` (a pruning method's own, say),
    fake quantization (`qat_bits`)."""
    modifiers: list[Modifier] = []
    if config.l1.lambda_ > 0:
        modifiers.append(L1(config))
    if config.distill.alpha > 0:
        if teacher is None and teacher_logits is None:
            raise CompressError(
                f"{desc}: distill.alpha > 0 needs a teacher (the trained model's logits)"
            )
        modifiers.append(Distillation(config.distill, teacher, teacher_logits))
    modifiers += extra
    if config.qat_bits:
        modifiers.append(FakeQuantization(config.qat_bits))
    return modifiers
