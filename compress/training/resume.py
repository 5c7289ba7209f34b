"""Per-epoch checkpoints: an interrupted stage continues where it stopped.

    save_epoch(path, key, model, optimizer, scheduler, history, epoch)   # after each epoch
    epoch, history = resume(path, key, device, model, optimizer, scheduler)  # 0, [] if none

A checkpoint holds the model, optimizer and scheduler states, the history and the CPU
generator's state, under the stage's cache key: one with another key, or unreadable, is
ignored (recomputed), never trusted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from compress.checkpoint import save_state
from compress.errors import CompressError

log = logging.getLogger(__name__)


def save_epoch(
    path: Path | None, key: str, model: nn.Module, optimizer, scheduler, history: list, epoch: int
) -> None:
    if path is None:
        return
    state = {
        "key": key,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": history,
        "rng": torch.get_rng_state(),
    }
    save_state(path, state)


def resume(
    path: Path | None, key: str, device, model: nn.Module, optimizer, scheduler
) -> tuple[int, list]:
    """Load the checkpoint at `path` into the model, optimizer and scheduler; returns the
    epochs it completed and their history (0 and [] when there is none to resume)."""
    if path is None or not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a corrupt checkpoint is recomputed, not trusted
        log.warning("ignoring unreadable epoch checkpoint %s (%s)", path, exc)
        return 0, []
    if not isinstance(state, dict) or state.get("key") != key:
        return 0, []
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CompressError(f"epoch checkpoint {path} does not fit the model: {exc}") from None
    # map_location moved every tensor to the training device; the CPU generator needs its own copy.
    torch.set_rng_state(state["rng"].cpu())
    log.info("resuming from epoch %d checkpoint %s", state["epoch"], path)
    return state["epoch"], list(state["history"])
