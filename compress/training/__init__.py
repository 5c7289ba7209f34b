"""The one training loop and its modifiers.

    result = fit(model, data, config.train, run=RunSettings(...), desc="train")
    fit(model, data, config, run, "finetune",
        modifiers=modifiers_for(config, "finetune", teacher=t))

`loop.py` is the loop (`fit`), read top to bottom; what a method adds to it is a modifier
(compress.modifier) with the hooks it needs: `l1.py` (penalty, proximal, group and
reweighted L1), `distill.py` (knowledge distillation), compress.qat (fake quantization),
compress.pruning's GradualPruner and VariationalDropout, compress.sharing's WeightSharing.
`modifiers_for` (modifiers.py) builds those a config asks for. Beside them: the optimizer
and schedule (optim.py), the channels_last layout (layout.py), per-epoch checkpoints
(resume.py) and accuracy (evaluation.py).
"""

from compress.modifier import Batch, Modifier
from compress.training.distill import Distillation, distillation_loss
from compress.training.evaluation import accuracies, evaluate, predict
from compress.training.l1 import (
    L1,
    L1Term,
    WeightGroups,
    layer_weight,
    weight_groups,
    weight_params,
)
from compress.training.layout import training_layout
from compress.training.loop import FitResult, RunSettings, final_accuracies, fit
from compress.training.modifiers import modifiers_for
from compress.training.optim import make_optimizer, make_scheduler, param_groups

__all__ = [
    "L1",
    "Batch",
    "Distillation",
    "FitResult",
    "L1Term",
    "Modifier",
    "RunSettings",
    "WeightGroups",
    "accuracies",
    "distillation_loss",
    "evaluate",
    "final_accuracies",
    "fit",
    "layer_weight",
    "make_optimizer",
    "make_scheduler",
    "modifiers_for",
    "param_groups",
    "predict",
    "training_layout",
    "weight_groups",
    "weight_params",
]
