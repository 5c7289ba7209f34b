"""Shared fixtures: a tiny slice of the real MNIST as IDX files, and a tiny pipeline file.

The data fixtures cut the first TRAIN_SAMPLES training and TEST_SAMPLES test images out of
the MNIST slice shipped in tests/data/mnist-slice and write them as proper gzipped IDX files
under a temporary data root, so every test trains on real but tiny data without touching
the network. A test whose data is missing fails; nothing is skipped for want of data.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from tiny_mnist import MNIST_SLICE

from compress.config import L1Config, PruneConfig, TrainConfig
from compress.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, SPLIT_FILES, load_dataset, read_idx
from compress.encode.onnx_tools import artifact_metadata
from compress.pruning import make_permanent, masks_of, prune_oneshot
from compress.registry import build_model
from compress.stages.export import export_onnx
from compress.training import RunSettings, fit

# The models here are tiny: extra threads only fight over the (shared, few) cores.
torch.set_num_threads(1)

TRAIN_SAMPLES = 2000
TEST_SAMPLES = 500


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000080N, big-endian dims, then the bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw)
    return path


def toml_value(value: Any) -> str:
    """A Python literal as TOML (the few types pipeline files use)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Top-level keys first, then one [section] per dict (nested dicts as inline tables)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, body in data.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"]
            lines += [f'"{k}" = {toml_value(v)}' for k, v in body.items()]
    return "\n".join(lines) + "\n"


def tiny_pipeline_data(data_root: Path) -> dict[str, Any]:
    """A pipeline that runs every stage in seconds: a 784-16-10 MLP, one epoch each."""
    return {
        "description": "tiny pipeline for tests",
        "data": {
            "name": "mnist",
            "root": str(data_root),
            "download": False,
            "batch_size": 32,
            "eval_batch_size": 500,
            "seed": 0,
        },
        "model": {"name": "simplenet", "kwargs": {"hidden": 16}},
        "train": {
            "epochs": 1,
            "optimizer": "sgd",
            "lr": 0.1,
            "l1": {"lambda": 1e-4, "method": "penalty"},
        },
        "prune": {"method": "threshold", "threshold": 0.02},
        "finetune": {"epochs": 1, "lr": 0.01},
        "quantize": {"variants": ["dynamic", "static"], "calibration_samples": 128},
        "verify": {"repetitions": 20, "throughput_batch": 500, "measure_ram": False},
    }


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with dotted keys replaced, e.g. {"finetune.lr": 0.02}."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    if "prune.method" in changes:  # another method: the base's settings (threshold) are not its own
        out["prune"] = {}
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    """The MNIST slice shipped with the tests (a test fails when it is missing)."""
    missing = [
        stem
        for stems in SPLIT_FILES.values()
        for stem in stems
        if not (MNIST_SLICE / f"{stem}.gz").is_file()
    ]
    if missing:
        pytest.fail(
            f"the MNIST slice in {MNIST_SLICE} lacks {', '.join(missing)}: "
            "it ships with the repository"
        )
    return MNIST_SLICE


@pytest.fixture(scope="session")
def mnist_arrays(mnist_source: Path) -> dict[str, np.ndarray]:
    """The first TRAIN_SAMPLES / TEST_SAMPLES images and labels of real MNIST, by file stem."""
    limits = {"train": TRAIN_SAMPLES, "test": TEST_SAMPLES}
    arrays = {}
    for split, (images, labels) in SPLIT_FILES.items():
        for stem, magic in ((images, IDX_IMAGES_MAGIC), (labels, IDX_LABELS_MAGIC)):
            path = mnist_source / f"{stem}.gz"
            arrays[stem] = read_idx(path, magic)[: limits[split]].copy()
    return arrays


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory, mnist_arrays) -> Path:
    """A data root holding the tiny MNIST slice as four gzipped IDX files (read-only use)."""
    root = tmp_path_factory.mktemp("mnist")
    for stem, array in mnist_arrays.items():
        write_idx(root / f"{stem}.gz", array)
    return root


@pytest.fixture(scope="session")
def tiny_data(mnist_root: Path):
    """The tiny MNIST slice loaded as a compress Dataset (shared: do not modify)."""
    return load_dataset("mnist", mnist_root, download=False)


@pytest.fixture(scope="session")
def idx_writer():
    """write_idx(path, array, gz=True): write a uint8 array as an IDX file."""
    return write_idx


@pytest.fixture(scope="session")
def pipeline_writer(mnist_root: Path):
    """Write the tiny pipeline, with optional dotted-key changes, to a .toml file.

    pipeline_writer(folder / "tiny.toml")
    pipeline_writer(folder / "tiny.toml", {"finetune.lr": 0.02})
    """

    def write(path: Path, changes: dict[str, Any] | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_toml(merge(tiny_pipeline_data(mnist_root), changes or {})))
        return path

    return write


@pytest.fixture
def pipeline_file(tmp_path: Path, pipeline_writer):
    """Write the tiny pipeline (with optional dotted-key changes) under tmp_path.

    path = pipeline_file()                                 # tmp_path/tiny.toml
    path = pipeline_file({"finetune.lr": 0.02}, name="b")  # tmp_path/b.toml
    """

    def write(changes: dict[str, Any] | None = None, name: str = "tiny") -> Path:
        return pipeline_writer(tmp_path / f"{name}.toml", changes)

    return write


@pytest.fixture
def tiny_pipeline(pipeline_file) -> Path:
    """The tiny pipeline file, unchanged."""
    return pipeline_file()


def run_settings(seed: int = 0, batch_size: int = 32, shift: int = 0) -> RunSettings:
    """Training settings for tests: CPU, no progress bars, no epoch checkpoints."""
    return RunSettings(
        device=torch.device("cpu"),
        batch_size=batch_size,
        eval_batch_size=500,
        seed=seed,
        shift=shift,
        progress=False,
    )


@pytest.fixture(scope="session")
def fit_settings():
    """run_settings(seed=0, batch_size=32, shift=0) -> RunSettings for `fit` on the CPU."""
    return run_settings


@pytest.fixture(scope="session")
def pruned_export(tmp_path_factory, tiny_data):
    """simplenet(hidden=16) trained one epoch with an L1 penalty, threshold-pruned, made
    permanent and exported with its metadata to <folder>/pruned.onnx (shared: read only).

    Attributes: model (eval mode, CPU), masks (layer -> bool keep-mask), path, folder.
    """
    torch.manual_seed(0)
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16})
    train = TrainConfig(epochs=1, lr=0.1, l1=L1Config(**{"lambda": 1e-4}))
    fit(model, tiny_data, train, run_settings(), desc="train")
    prune_oneshot(model.cpu(), PruneConfig(method="threshold", threshold=0.02))
    masks = masks_of(model)
    make_permanent(model)
    folder = tmp_path_factory.mktemp("export")
    path = folder / "pruned.onnx"
    metadata = artifact_metadata(
        tiny_data.preprocessing, list(tiny_data.classes), "simplenet", "pruned"
    )
    export_onnx(model, tiny_data.input_shape, path, opset=18, metadata=metadata)
    return SimpleNamespace(model=model.eval(), masks=masks, path=path, folder=folder)
