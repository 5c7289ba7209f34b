"""Self-describing checkpoints: the model's recipe travels with its weights.

    save_checkpoint(path, model, spec, masks)
    model, masks = load_checkpoint(path)

Files are written atomically and read with `torch.load(weights_only=True)`, so a
checkpoint can never run code when loaded.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.files import atomic_path
from compress.registry import build_model

log = logging.getLogger(__name__)

FORMAT = "compress-checkpoint/1"


def model_spec(
    config_model, base_dir: str | Path, num_classes: int, input_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Everything needed to rebuild the model: registry name or file + class, kwargs and
    the shape of one input sample (passed to factories that accept `input_shape`)."""
    kwargs = {"num_classes": num_classes, **config_model.kwargs}
    shape = {"input_shape": [int(d) for d in input_shape]} if input_shape is not None else {}
    if config_model.name is not None:
        return {"name": config_model.name, "kwargs": kwargs, **shape}
    path = Path(config_model.path)
    path = path if path.is_absolute() else Path(base_dir) / path
    return {
        "path": str(path.resolve()),
        "class": config_model.class_name,
        "kwargs": kwargs,
        **shape,
    }


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    shape = spec.get("input_shape")
    return build_model(
        spec.get("name"),
        spec.get("path"),
        spec.get("class"),
        spec.get("kwargs"),
        tuple(shape) if shape is not None else None,
    )


def save_checkpoint(
    path: Path, model: nn.Module, spec: dict[str, Any], masks: dict[str, torch.Tensor] | None = None
) -> None:
    state = {
        "format": FORMAT,
        "model": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "masks": {k: v.cpu() for k, v in (masks or {}).items()},
    }
    save_state(path, state)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """torch.save, atomically and byte-reproducibly."""
    # Through a file object, torch names the archive "archive" instead of after the
    # (random) temporary file, so the same weights always give the same bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def _unpickling_reason(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it refers to the Python object {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    return f"it holds more than tensors ({found.group(1) if found else text.splitlines()[0]})"


def safe_load(path: Path, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True, turning every failure into a clear message."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CompressError(f"{what} {path} does not exist") from None
    except pickle.UnpicklingError as exc:
        raise CompressError(
            f"refusing to load {what} {path}: {_unpickling_reason(exc)}, which only full "
            "unpickling can load, and that could run code; save a plain state_dict with "
            "torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise CompressError(
            f"{what} {path} is unreadable or corrupt: {type(exc).__name__}: {reason}"
        ) from None


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """Rebuild the model of a checkpoint; returns (model, masks, spec)."""
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CompressError(f"{path} is not a compress checkpoint")
    model = build_from_spec(state["model"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise CompressError(
            f"checkpoint {path} does not fit its model: {_load_problems(exc)}"
        ) from None
    return model, state["masks"], state["model"]


DATA_PARALLEL_PREFIX = "module."


def _without_data_parallel_prefix(state: dict, model: nn.Module, path: Path) -> dict:
    """Weights saved from a DataParallel / DistributedDataParallel wrapper have every key
    prefixed with `module.`; the plain model's keys are the same without it."""
    keys = [k for k in state if isinstance(k, str)]
    expected = set(model.state_dict())
    if not keys or not all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys):
        return state
    if any(k.startswith(DATA_PARALLEL_PREFIX) for k in expected):
        return state  # the model itself has a submodule called `module`
    log.warning(
        "weights file %s was saved from a DataParallel wrapper (every key starts with %r): "
        "loading it with the prefix removed; save model.module.state_dict() to avoid this note",
        path,
        DATA_PARALLEL_PREFIX,
    )
    return {k.removeprefix(DATA_PARALLEL_PREFIX): v for k, v in state.items()}


def _load_problems(exc: RuntimeError) -> str:
    """torch's "Error(s) in loading state_dict for Net:" then one tab-indented line per problem."""
    problems = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
    return problems[:300] + " ..." if len(problems) > 300 else problems


def load_user_weights(model: nn.Module, path: Path, partial: bool = False) -> dict[str, Any]:
    """Load a user's state_dict file (weights_only) into `model`, with a clear error if it does
    not fit; returns what was loaded (`loaded`: tensor count, `skipped`: the model's tensors
    left as initialized, `unused`: the file's tensors no model tensor took, by name).

    `partial` ([model] weights_partial): load every tensor whose name and shape fit and keep
    the rest as the model initialized them, as for ImageNet weights on a 10-class head; an
    error only when nothing fits."""
    state = safe_load(path, "weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        got = type(state).__name__ if not isinstance(state, dict) else "a dict of non-tensors"
        raise CompressError(f"weights file {path} does not hold a state_dict (got {got})")
    state = _without_data_parallel_prefix(state, model, path)
    if partial:
        return _load_fitting(model, state, path)
    expected, given = set(model.state_dict()), set(state)
    if expected != given:  # name the keys first: a shape message can wait
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        parts = [f"{len(missing)} missing ({_few(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({_few(unexpected)})"] if unexpected else []
        raise CompressError(
            f"weights file {path} does not fit the model: keys {'; '.join(parts)} "
            "(weights_partial = true in [model] loads only the tensors that fit)"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CompressError(
            f"weights file {path} does not fit the model: {_load_problems(exc)} "
            "(weights_partial = true in [model] loads only the tensors that fit)"
        ) from None
    return {"loaded": len(state), "skipped": [], "unused": []}


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")


def _load_fitting(model: nn.Module, state: dict, path: Path) -> dict[str, Any]:
    """Load the tensors of `state` whose name and shape match the model's; log the rest."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fits:
        raise CompressError(
            f"weights file {path} does not fit the model: no tensor has a name and shape of "
            f"the model's (the model has {_few(sorted(own))}; the file {_few(sorted(state))})"
        )
    model.load_state_dict(fits, strict=False)
    skipped = sorted(set(own) - set(fits))
    unused = sorted(set(state) - set(fits))
    log.info(
        "weights file %s: loaded %d of the model's %d tensors; kept as initialized: %s",
        path,
        len(fits),
        len(own),
        ", ".join(skipped) or "none",
    )
    if unused:
        log.info("weights file %s: tensors no model tensor took: %s", path, ", ".join(unused))
    return {"loaded": len(fits), "skipped": skipped, "unused": unused}
