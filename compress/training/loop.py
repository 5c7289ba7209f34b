"""The one training loop, shared by train, gradual prune, variational dropout, finetune and
weight sharing; what differs between them are settings and modifiers (compress.modifier).

    result = fit(model, data, config.train, run=RunSettings(...), desc="train")
    result = fit(model, data, config.gradual, run, "prune",
                 modifiers_for(config.gradual, "prune", pruner))

Without `modifiers`, fit trains with those its config asks for (`modifiers_for`: L1,
fake quantization; distillation needs a teacher, so a stage passes it). Pruning masks are
torch.nn.utils.prune forward hooks on the model, so they hold without help from the loop.
Each epoch ends with a resumable checkpoint (compress.training.resume).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from compress import distributed
from compress.config import OptimConfig
from compress.data import Dataset
from compress.data.augment import augment_audio, random_shift
from compress.errors import TrainingError
from compress.modifier import Batch, Modifier
from compress.training.evaluation import accuracies
from compress.training.layout import training_layout
from compress.training.modifiers import modifiers_for
from compress.training.optim import make_optimizer, make_scheduler, param_groups
from compress.training.resume import resume, save_epoch

log = logging.getLogger(__name__)


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
    # SyncBatchNorm while several processes train (compress.distributed); else ignored
    sync_batchnorm: bool = False


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def fit(
    model: nn.Module,
    data: Dataset,
    config: OptimConfig,
    run: RunSettings,
    desc: str,
    modifiers: list[Modifier] | None = None,
) -> FitResult:
    """Train `model` in place for `config.epochs` epochs; returns per-epoch metrics."""
    modifiers = modifiers_for(config, desc) if modifiers is None else modifiers
    model.to(run.device)
    restore_batchnorm = (
        distributed.sync_batchnorm(model, run.device) if run.sync_batchnorm else lambda: None
    )
    layout = training_layout(model, run.device, data.normalize(data.images["train"][:2]))
    model.to(memory_format=layout)
    for m in modifiers:  # before the optimizer and the resume: they may add parameters
        m.attach(model, layout)
    optimizer = make_optimizer(param_groups(model, modifiers), config)
    steps_per_epoch = math.ceil(data.size("train") / run.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    torch.manual_seed(run.seed)  # before resuming, which restores the generator's state
    start, history = resume(
        run.resume_path, run.resume_key, run.device, model, optimizer, scheduler
    )
    result = FitResult(history, resumed_from_epoch=start)
    for m in modifiers:
        m.start(model, optimizer)

    for epoch in range(start, config.epochs):
        model.train()
        for m in modifiers:
            m.epoch_start(epoch)
        started = time.perf_counter()
        meter = EpochMeter(run.device)
        bar = _progress(data, run, desc, epoch, config.epochs, steps_per_epoch)
        shifts = _epoch_generator(run.seed + 1_000_003, epoch)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, index in enumerate(bar):
            step = epoch * steps_per_epoch + i
            batch, weight = _batch(data, index, run, shifts, layout)
            logits = model(batch.x)
            loss = F.cross_entropy(logits, batch.y)
            for m in modifiers:
                loss = m.task_loss(loss, logits, batch)
            total = loss
            for m in modifiers:
                term = m.loss(step, total_steps, logits, batch)
                total = total if term is None else total + term
            optimizer.zero_grad(set_to_none=True)
            meter.watch(i, total)
            total.backward()
            distributed.average_gradients(params, weight)  # before L1 or pruning act on them
            for m in modifiers:
                m.after_backward()
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            for m in modifiers:
                m.after_step(step + 1, total_steps, lr)
            if weight > 0:  # a rank with no samples of its own in this batch counts none
                meter.add(loss, logits, batch.y)
            if i % 50 == 0:
                meter.check(run, desc, epoch, steps_per_epoch)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        meter.check(run, desc, epoch, steps_per_epoch)
        meter.gather(model)
        result.history.append(
            _epoch_row(model, data, run, meter, epoch, scheduler.get_last_lr()[0], started)
        )
        _log_epoch(desc, result.history[-1], config.epochs)
        for m in modifiers:
            m.epoch_end(epoch)
        _check_in_step(model, desc, epoch, result.history[-1])
        save_epoch(
            run.resume_path, run.resume_key, model, optimizer, scheduler, result.history, epoch + 1
        )
    for m in reversed(modifiers):
        m.detach(model)
    restore_batchnorm()
    model.to(
        memory_format=torch.contiguous_format
    )  # what follows (export, encoders) sees the usual layout
    return result


def final_accuracies(
    result: FitResult, model: nn.Module, data: Dataset, batch_size: int
) -> dict[str, float]:
    """Validation and test accuracy after training: the last epoch's, or measured now if no
    epoch ran."""
    final = result.final
    if final.get("val_accuracy") is not None and final.get("test_accuracy") is not None:
        return {"val_accuracy": final["val_accuracy"], "test_accuracy": final["test_accuracy"]}
    return accuracies(model, data, batch_size)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # The shuffle of each epoch depends only on (seed, epoch), so a resumed run sees the
    # same batches as an uninterrupted one.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _progress(
    data: Dataset, run: RunSettings, desc: str, epoch: int, epochs: int, steps: int
) -> tqdm:
    """The epoch's batches of training-sample indices, shuffled, behind a progress bar."""
    batches = data.index_batches("train", run.batch_size, _epoch_generator(run.seed, epoch))
    return tqdm(
        batches,
        total=steps,
        desc=f"{desc} {epoch + 1}/{epochs}",
        leave=False,
        disable=not run.progress,
        unit="batch",
    )


def _batch(
    data: Dataset, index: torch.Tensor, run: RunSettings, shifts: torch.Generator, layout
) -> tuple[Batch, float]:
    """The batch this process trains on and the weight of its gradient: the whole batch
    with one process, else this rank's slice of it (compress.distributed.shard)."""
    part, weight = distributed.shard(len(index))
    if run.shift and data.kind == "image":
        # the shifts are drawn for the whole batch, so each sample gets the one it would get
        # with one process
        x = random_shift(data.images["train"][index], run.shift, shifts)[part]
    elif data.kind == "audio":  # on the waveforms (the front end, normalize, follows), drawn
        # for the whole batch as the shifts are
        x = augment_audio(data.images["train"][index], data.augmentation, shifts)[part]
    else:
        x = data.images["train"][index[part]]
    index = index[part]
    x = data.normalize(x).to(run.device, non_blocking=True)
    if x.dim() == 4:
        x = x.contiguous(memory_format=layout)
    y = data.labels["train"][index].to(run.device, non_blocking=True)
    return Batch(x, y, index), weight


def _check_in_step(model: nn.Module, desc: str, epoch: int, row: dict) -> None:
    """With several processes: the ranks' weights compared after the epoch (one line if one
    drifted); the epoch's row records the checksum and the number of ranks."""
    checksum = distributed.check_in_step(model, desc, epoch)
    if checksum is not None:
        row["ranks"] = distributed.world().size
        row["checksum"] = checksum


class EpochMeter:
    """An epoch's loss sum and correct answers, and the step (1-based) and value of its first
    non-finite loss: kept on the device so that a step costs no sync; `check` reads them
    (every 50 steps and at the epoch's end)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), device=device)

    def watch(self, i: int, total: torch.Tensor) -> None:
        first_bad = (self.bad_step == 0) & ~torch.isfinite(total.detach())
        self.bad_step = torch.where(first_bad, i + 1, self.bad_step)
        self.bad_value = torch.where(first_bad, total.detach(), self.bad_value)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()

    def gather(self, model: nn.Module) -> None:
        """With several processes: the epoch's sums over all ranks, and rank 0's BatchNorm
        running statistics on every rank (each saw only its slices), before evaluating."""
        distributed.sum_(self.loss_sum, self.correct)
        distributed.broadcast_buffers(model)

    def check(self, run: RunSettings, desc: str, epoch: int, steps: int) -> None:
        distributed.max_(self.bad_step)  # a rank that saw a non-finite loss stops them all
        step = int(self.bad_step.item())
        if step == 0:
            return
        kept = ""
        if epoch > 0 and run.resume_path is not None and run.resume_path.exists():
            kept = f"; the last good checkpoint (epoch {epoch}) is kept in {run.resume_path}"
        raise TrainingError(
            f"{desc}: loss became {self.bad_value.item()} in epoch {epoch + 1} "
            f"at step {step} of {steps}; "
            f"lower the learning rate or the L1 lambda{kept}"
        )


def _epoch_row(
    model, data: Dataset, run: RunSettings, meter: EpochMeter, epoch: int, lr: float, started
) -> dict:
    """The epoch's metrics; its seconds include the evaluation."""
    measured = accuracies(model, data, run.eval_batch_size, run.device)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "loss": round(meter.loss_sum.item() / data.size("train"), 6),
        "train_accuracy": round(meter.correct.item() / data.size("train"), 6),
        "val_accuracy": round(measured["val_accuracy"], 6),
        "test_accuracy": round(measured["test_accuracy"], 6),
        "lr": lr,
        "seconds": round(seconds, 3),
    }


def _log_epoch(desc: str, row: dict, epochs: int) -> None:
    log.info(
        "%s epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f  test acc %.4f  %.1fs  "
        "(about %.0fs left)",
        desc,
        row["epoch"],
        epochs,
        row["loss"],
        row["train_accuracy"],
        row["val_accuracy"],
        row["test_accuracy"],
        row["seconds"],
        row["seconds"] * (epochs - row["epoch"]),
    )
