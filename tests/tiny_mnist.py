"""Small MNIST copies and pipeline files for the reliability tests.

    root = write_tiny_mnist(tmp_path / "data")      # first 2000 train / 500 test real images
    path = write_pipeline(tmp_path / "p.toml", root, train={"epochs": 3})

The real images come from the MNIST slice shipped in tests/data/mnist-slice (the first
2,000 training and 1,000 test images); a test whose data is missing fails, never skips.
Nothing here touches the network.
"""

from __future__ import annotations

import gzip
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest

MNIST_SLICE = Path(__file__).resolve().parent / "data" / "mnist-slice"  # see its README.md
STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An uncompressed IDX file holding a uint8 array."""
    magic = magic if magic is not None else 0x800 | array.ndim
    return (
        struct.pack(">I", magic)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )


def _read_real(stem: str, count: int) -> np.ndarray:
    path = MNIST_SLICE / f"{stem}.gz"
    if not path.is_file():
        pytest.fail(f"the MNIST slice file {path} is missing: it ships with the repository")
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if count > shape[0]:
        pytest.fail(f"{path} holds {shape[0]} samples; a test asked for {count}")
    per_sample = int(np.prod(shape[1:])) if ndim > 1 else 1
    data = np.frombuffer(raw, np.uint8, count * per_sample, offset=4 + 4 * ndim)
    return data.reshape(count, *shape[1:])


@cache
def tiny_arrays(n_train: int = 2000, n_test: int = 500) -> dict[str, np.ndarray]:
    """The first images and labels of the real MNIST splits, by role."""
    counts = {"train": n_train, "test": n_test}
    return {role: _read_real(stem, counts[role.split("-")[0]]) for role, stem in STEMS.items()}


def write_tiny_mnist(
    root: Path, n_train: int = 2000, n_test: int = 500, **replace: np.ndarray
) -> Path:
    """Gzipped IDX files of a small MNIST in `root` (flat layout); `replace` swaps an array by
    role."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        **tiny_arrays(n_train, n_test),
        **{k.replace("_", "-"): v for k, v in replace.items()},
    }
    for role, array in arrays.items():
        (root / f"{STEMS[role]}.gz").write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return root


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


# A pipeline that runs end to end in a few seconds on the tiny data.
TINY = {
    "data": {"name": "mnist", "download": False, "batch_size": 100, "eval_batch_size": 500},
    "model": {"name": "simplenet", "kwargs": {"hidden": 16}},
    "train": {"epochs": 2, "lr": 0.1, "momentum": 0.5, "l1": {"lambda": 1e-4}},
    "prune": {"threshold": 0.02},
    "finetune": {"epochs": 1, "lr": 0.02},
    "quantize": {"variants": ["dynamic"], "calibration_samples": 64},
    "verify": {"repetitions": 5, "throughput_batch": 500, "measure_ram": False},
}


def pipeline_text(data_root: Path | None, **sections: dict) -> str:
    """TOML for TINY with `sections` merged in (a value None removes a key or section)."""
    merged = {name: dict(values) for name, values in TINY.items()}
    if data_root is not None:
        merged["data"]["root"] = str(data_root)
    for name, values in sections.items():
        if values is None:
            merged.pop(name, None)
            continue
        target = merged.setdefault(name, {})
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    lines = []
    for name, values in merged.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def write_pipeline(path: Path, data_root: Path | None, **sections: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pipeline_text(data_root, **sections))
    return path


def files_under(root: Path) -> set[str]:
    """Every file and folder below `root`, relative (to see that nothing was written)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
