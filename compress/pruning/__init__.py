"""Pruning library: which weights to remove (methods, by name), when (once or gradually),
and the masks that remove them (torch.nn.utils.prune, owned by compress.pruning.masks).

    masks = prune_oneshot(model, config.prune)            # config.prune.method names the method
    pruner = GradualPruner(model, config.prune)           # a training modifier for fit
    get_method("magnitude").strength                      # "amount"

Methods: compress.pruning.threshold, .magnitude, .channels (structured; see BUILTIN in
compress.pruning.registry); a new one is a module with a PruningMethod subclass
(compress.pruning.base) and its name added to BUILTIN. `[prune] keep_inputs`, shared by every
method, keeps the k strongest inputs after the method's masks (compress.pruning.inputs). The
prune stage that uses this library is compress.stages.prune; finetune holds the masks and
makes the pruning permanent.
"""

from compress.pruning.base import PruningMethod, keep_largest
from compress.pruning.inputs import (
    check_keep_inputs,
    input_scores,
    keep_strongest_inputs,
    strong_inputs,
)
from compress.pruning.masks import (
    PRUNABLE,
    add_masks,
    apply_masks,
    check_layer_names,
    current_mask,
    ensure_masked,
    make_permanent,
    masked_count,
    masks_of,
    plain_state_dict,
    positive_zeros,
    prunable_layers,
    sparsity_by_layer,
    sparsity_summary,
)
from compress.pruning.registry import get_method, list_methods, register_pruning_method
from compress.pruning.schedule import GradualPruner, cubic_sparsity, method_for, prune_oneshot

__all__ = [
    "PRUNABLE",
    "GradualPruner",
    "PruningMethod",
    "add_masks",
    "apply_masks",
    "check_keep_inputs",
    "check_layer_names",
    "cubic_sparsity",
    "current_mask",
    "ensure_masked",
    "get_method",
    "input_scores",
    "keep_largest",
    "keep_strongest_inputs",
    "list_methods",
    "make_permanent",
    "masked_count",
    "masks_of",
    "method_for",
    "plain_state_dict",
    "positive_zeros",
    "prunable_layers",
    "prune_oneshot",
    "register_pruning_method",
    "sparsity_by_layer",
    "sparsity_summary",
    "strong_inputs",
]
