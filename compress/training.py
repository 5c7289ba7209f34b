"""The one training loop, shared by train, gradual prune and finetune.

    result = fit(model, data, config.train, run=RunSettings(...), desc="train")

Differences between stages are settings and hooks, not copies of the loop: the L1 term
(penalty on the loss or proximal soft-threshold after each step) comes from the optimizer
config; pruning masks are torch.nn.utils.prune forward hooks on the model, so they hold
without help from the loop; a `step_hook` (gradual pruning) runs after each step. Each epoch
ends with a resumable checkpoint, so an interrupted stage continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from compress.checkpoint import save_state
from compress.config import OptimConfig
from compress.data import Dataset
from compress.data.augment import random_shift
from compress.errors import CompressError, TrainingError
from compress.pruning import PRUNABLE
from compress.qat import attach_fake_quant, detach

log = logging.getLogger(__name__)

StepHook = Callable[[int, int], None]  # (global step, total steps)
LossTerm = Callable[[int, int], torch.Tensor]  # (global step, total steps) -> added to the loss
NO_DECAY_SUFFIX = "log_sigma2"  # noise parameters (compress.variational): no weight decay


@dataclass
class RunSettings:
    """Where and how a stage trains (not part of the method's config)."""

    device: torch.device
    batch_size: int
    eval_batch_size: int
    seed: int
    shift: int = 0  # random translation of training images, in pixels (compress.data.augment)
    resume_path: Path | None = None  # per-epoch checkpoint to resume from / write
    resume_key: str = ""  # the stage's cache key: a checkpoint with another key is ignored
    progress: bool = True


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def weight_params(model: nn.Module, which: str = "weights") -> list[torch.Tensor]:
    """Parameters the L1 term applies to: matrices and kernels (dim > 1), or everything."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(NO_DECAY_SUFFIX)]
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
        if "inputs" in kinds and (not is_conv or layer.groups == 1):  # grouped convs: no whole-input slices
            dims.append(1)
        for dim in dims:
            group = WeightGroups(param, dim, torch.zeros(param.shape[dim], dtype=torch.bool, device=param.device), layer)
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

    def __init__(self, model: nn.Module, config: OptimConfig, optimizer: torch.optim.Optimizer | None = None):
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

        fit takes the penalty's value without autograd and adds its gradient here after
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
                inverse = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-30), torch.zeros_like(norms))
                g.param.grad.add_(g.param * g.broadcast(inverse), alpha=self.lam)
            return
        for p in self.params:
            if p.grad is None:  # a weight the loss does not reach still gets the penalty's pull
                p.grad = torch.zeros_like(p)
        torch._foreach_add_([p.grad for p in self.params], torch._foreach_sign(self.params), alpha=self.lam)

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


def make_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: OptimConfig, steps_per_epoch: int):
    """Per-step schedule, so that cosine decays smoothly within epochs."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    elif config.schedule == "step":
        factor = lambda step: config.gamma ** ((step // steps_per_epoch) // config.step_size)  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str, batch_size: int, device) -> float:
    """Top-1 accuracy (0..1) of `model` on a whole split (NaN for an empty split: a data set
    loaded without a validation part, as the benchmark does to train on every image)."""
    if data.size(split) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for x, y in data.batches(split, batch_size, shuffle=False):
        correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct / data.size(split)


def accuracies(model: nn.Module, data: Dataset, batch_size: int, device="cpu") -> dict[str, float]:
    """Validation accuracy (what choices are made on) and test accuracy (reported only)."""
    return {f"{split}_accuracy": evaluate(model, data, split, batch_size, device) for split in ("val", "test")}


def final_accuracies(result: FitResult, model: nn.Module, data: Dataset, batch_size: int) -> dict[str, float]:
    """Validation and test accuracy after training: the last epoch's, or measured now if no
    epoch ran."""
    final = result.final
    if final.get("val_accuracy") is not None and final.get("test_accuracy") is not None:
        return {"val_accuracy": final["val_accuracy"], "test_accuracy": final["test_accuracy"]}
    return accuracies(model, data, batch_size)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(teacher_T || student_T)."""
    return F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # The shuffle of each epoch depends only on (seed, epoch), so a resumed run sees the
    # same batches as an uninterrupted one.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def fit(
    model: nn.Module,
    data: Dataset,
    config: OptimConfig,
    run: RunSettings,
    desc: str,
    step_hook: StepHook | None = None,
    teacher_logits: torch.Tensor | None = None,
    loss_term: LossTerm | None = None,
    teacher: nn.Module | None = None,
) -> FitResult:
    """Train `model` in place for `config.epochs` epochs; returns per-epoch metrics.

    `loss_term(step, total_steps)`, when given, is added to each step's loss (a sparsifier's
    regulariser, e.g. variational dropout's KL term).

    With `teacher_logits` (one row per training sample) and `config.distill.alpha` > 0, the
    loss mixes in the KL divergence to the teacher's softened predictions. With
    `run.shift` (augmented images) the teacher's predictions differ from batch to batch:
    pass the `teacher` model instead, which is run on each batch.
    """
    model.to(run.device)
    layout = training_layout(model, run.device, data.normalize(data.images["train"][:2]))
    model.to(memory_format=layout)
    # Before the optimizer and the resume: fake quantization re-registers weights as weight_orig.
    fake_quant = attach_fake_quant(model, config.qat_bits) if config.qat_bits else []
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [{"params": [p for n, p in named if not n.endswith(NO_DECAY_SUFFIX)]}]
    noise = [p for n, p in named if n.endswith(NO_DECAY_SUFFIX)]
    if noise:  # decay would pull log sigma^2 towards 0, i.e. towards noise
        params.append({"params": noise, "weight_decay": 0.0})
    optimizer = make_optimizer(params, config)
    steps_per_epoch = math.ceil(data.size("train") / run.batch_size)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    result = FitResult()
    torch.manual_seed(run.seed)  # before resuming, which restores the generator's state
    start_epoch = _resume(run, model, optimizer, scheduler, result)
    l1 = L1Term(model, config, optimizer)  # after resuming: groups zero in the checkpoint stay zero
    total_steps = config.epochs * steps_per_epoch
    images, labels = data.images["train"], data.labels["train"]
    distill = config.distill if config.distill.alpha > 0 else None
    if distill and teacher_logits is None and teacher is None:
        raise CompressError(f"{desc}: distill.alpha > 0 needs a teacher (the trained model's logits)")
    if teacher is not None:
        teacher.to(run.device, memory_format=layout).eval()

    for epoch in range(start_epoch, config.epochs):
        model.train()
        l1.start_epoch()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=run.device)
        correct = torch.zeros((), dtype=torch.long, device=run.device)
        # Step (1-based) and value of this epoch's first non-finite loss, tracked on the
        # device so that a check costs no sync; read every 50 steps and at the epoch's end.
        bad_step = torch.zeros((), dtype=torch.long, device=run.device)
        bad_value = torch.zeros((), device=run.device)
        batches = data.index_batches("train", run.batch_size, _epoch_generator(run.seed, epoch))
        shifts = _epoch_generator(run.seed + 1_000_003, epoch)
        bar = tqdm(
            batches, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{config.epochs}",
            leave=False, disable=not run.progress, unit="batch",
        )
        for i, index in enumerate(bar):
            x = images[index]
            if run.shift and data.kind == "image":
                x = random_shift(x, run.shift, shifts)
            x = data.normalize(x).to(run.device, non_blocking=True)
            if x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            y = labels[index].to(run.device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if distill:
                if teacher is not None:
                    with torch.no_grad():
                        target = teacher(x)
                else:
                    target = teacher_logits[index].to(run.device)
                loss = (1 - distill.alpha) * loss + distill.alpha * distillation_loss(
                    logits, target, distill.temperature
                )
            with torch.no_grad():  # the value only: add_gradient adds its gradient after backward
                penalty = l1.penalty()
            total = loss + penalty if penalty is not None else loss
            if loss_term is not None:
                total = total + loss_term(epoch * steps_per_epoch + i, total_steps)
            optimizer.zero_grad(set_to_none=True)
            first_bad = (bad_step == 0) & ~torch.isfinite(total.detach())
            bad_step = torch.where(first_bad, i + 1, bad_step)
            bad_value = torch.where(first_bad, total.detach(), bad_value)
            total.backward()
            l1.add_gradient()
            optimizer.step()
            l1.proximal_step(scheduler.get_last_lr()[0])
            scheduler.step()
            step = epoch * steps_per_epoch + i + 1
            if step_hook is not None:
                step_hook(step, total_steps)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if i % 50 == 0:
                _check_finite(run, desc, epoch, steps_per_epoch, bad_step, bad_value)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        _check_finite(run, desc, epoch, steps_per_epoch, bad_step, bad_value)
        train_loss = loss_sum.item() / data.size("train")
        measured = accuracies(model, data, run.eval_batch_size, run.device)
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            "loss": round(train_loss, 6),
            "train_accuracy": round(correct.item() / data.size("train"), 6),
            "val_accuracy": round(measured["val_accuracy"], 6),
            "test_accuracy": round(measured["test_accuracy"], 6),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 3),
        }
        result.history.append(row)
        remaining = seconds * (config.epochs - epoch - 1)
        log.info(
            "%s epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f  test acc %.4f  %.1fs  (about %.0fs left)",
            desc, epoch + 1, config.epochs, train_loss, row["train_accuracy"], row["val_accuracy"],
            row["test_accuracy"], seconds, remaining,
        )
        _save_resume(run, model, optimizer, scheduler, result, epoch + 1)
    detach(fake_quant)
    for trained in (model, teacher):  # what follows (export, encoders) sees the usual layout
        if trained is not None:
            trained.to(memory_format=torch.contiguous_format)
    return result


def training_layout(model: nn.Module, device: torch.device, sample: torch.Tensor | None = None) -> torch.memory_format:
    """channels_last for a model with 2-d convolutions trained on the CPU, else the usual
    layout. oneDNN's CPU kernels are faster on it: on LeNet-5 at batch 128, max pooling ran
    about 9x faster and each convolution with its backward about 1.4x; the values computed
    are the same up to float rounding. With a `sample` batch, a model whose forward pass
    fails on that layout (a `.view` of a convolution's output, say) keeps the usual one."""
    has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    only_4d = all(p.dim() <= 4 for p in model.parameters()) and all(b.dim() <= 4 for b in model.buffers())
    if torch.device(device).type != "cpu" or not has_conv2d or not only_4d:
        return torch.contiguous_format
    if sample is not None and sample.dim() == 4 and not _runs_in(model, torch.channels_last, sample):
        return torch.contiguous_format
    return torch.channels_last


@torch.no_grad()
def _runs_in(model: nn.Module, layout: torch.memory_format, sample: torch.Tensor) -> bool:
    """Whether one evaluation-mode forward pass of `sample` works with the model in `layout`
    (the model is left as it was)."""
    was_training = model.training
    model.eval().to(memory_format=layout)
    try:
        model(sample.to(next(model.parameters()).device).contiguous(memory_format=layout))
        return True
    except RuntimeError:
        return False
    finally:
        model.to(memory_format=torch.contiguous_format).train(was_training)


def _check_finite(run: RunSettings, desc: str, epoch: int, steps: int, bad_step, bad_value) -> None:
    step = int(bad_step.item())
    if step == 0:
        return
    kept = ""
    if epoch > 0 and run.resume_path is not None and run.resume_path.exists():
        kept = f"; the last good checkpoint (epoch {epoch}) is kept in {run.resume_path}"
    raise TrainingError(
        f"{desc}: loss became {bad_value.item()} in epoch {epoch + 1} at step {step} of {steps}; "
        f"lower the learning rate or the L1 lambda{kept}"
    )


def _save_resume(run: RunSettings, model, optimizer, scheduler, result: FitResult, epoch: int) -> None:
    if run.resume_path is None:
        return
    state = {
        "key": run.resume_key,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": result.history,
        "rng": torch.get_rng_state(),
    }
    save_state(run.resume_path, state)


def _resume(run: RunSettings, model, optimizer, scheduler, result: FitResult) -> int:
    path = run.resume_path
    if path is None or not path.exists():
        return 0
    try:
        state = torch.load(path, map_location=run.device, weights_only=True)
    except Exception as exc:  # a corrupt checkpoint is recomputed, not trusted
        log.warning("ignoring unreadable epoch checkpoint %s (%s)", path, exc)
        return 0
    if not isinstance(state, dict) or state.get("key") != run.resume_key:
        return 0
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CompressError(f"epoch checkpoint {path} does not fit the model: {exc}") from None
    # map_location moved every tensor to the training device; the CPU generator needs its own copy.
    torch.set_rng_state(state["rng"].cpu())
    result.history = list(state["history"])
    result.resumed_from_epoch = state["epoch"]
    log.info("resuming from epoch %d checkpoint %s", state["epoch"], path)
    return state["epoch"]
