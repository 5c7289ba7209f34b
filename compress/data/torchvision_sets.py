"""torchvision's RGB data sets, read from their own on-disk formats: cifar10, cifar100, svhn.

    [data]
    name = "cifar10"        # or cifar100, svhn
    root = "data"           # else --data-root, else ./data

- cifar10: `<root>/cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta);
- cifar100: `<root>/cifar-100-python/` (train, test, meta; the 100 fine labels);
- svhn: `<root>/train_32x32.mat` and `test_32x32.mat` (or under `<root>/svhn/`), read with
  scipy (install it with `pip install scipy`); label 10 is the digit 0.

The CIFAR batches are Python pickles: they are read with an unpickler that builds only
numpy arrays, lists and dicts, so a hostile file cannot run code. Missing files are
downloaded with torchvision where `download = true` (nothing is left behind when that
fails). Images are uint8 [N, 3, 32, 32]; mean and std per channel come from the training
part (after the validation split is held out).
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from compress.data.base import DataSource, ImageDataCommon
from compress.data.dataset import Dataset, channel_stats
from compress.data.download import fetch_into
from compress.data.published import check_published
from compress.data.registry import register_source
from compress.data.split import split_dataset
from compress.errors import DataError
from compress.files import sha256_file

log = logging.getLogger(__name__)

CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", b"label_names"),
        "labels": b"labels",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", b"fine_label_names"),
        "labels": b"fine_labels",
        "torchvision": "CIFAR100",
    },
}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SHAPE = (3, 32, 32)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refers to the Python object {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """One CIFAR batch file as a dict with bytes keys."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        value = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"refusing to read {path}: {exc} (not a CIFAR batch)") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise DataError(
            f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"{path} is not a CIFAR batch: it holds a {type(value).__name__}, not a dict"
        )
    return {k.encode() if isinstance(k, str) else k: v for k, v in value.items()}


def _cifar_split(
    folder: Path, names: list[str], label_key: bytes, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = read_pickle(path)
        if b"data" not in batch or label_key not in batch:
            lacking = "data" if b"data" not in batch else label_key.decode()
            raise DataError(f"{path} is not a CIFAR batch: it lacks {lacking}")
        data = np.asarray(batch[b"data"])
        y = np.asarray(batch[label_key]).astype(np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != int(np.prod(SHAPE)):
            raise DataError(
                f"{path}: data is {data.dtype} {data.shape}, "
                "expected uint8 [N, 3072] (32x32 RGB rows)"
            )
        if len(data) != len(y):
            raise DataError(f"{path} holds {len(data)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"{path} has label {int(y.max() if y.max() >= num_classes else y.min())}, "
                f"outside 0..{num_classes - 1}"
            )
        images.append(data.reshape(-1, *SHAPE))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_files(name: str, root: Path) -> tuple[Path, list[Path]]:
    spec = CIFAR[name]
    folder = root / spec["folder"]
    needed = [*spec["train"], *spec["test"], spec["meta"][0]]
    return folder, [folder / n for n in needed if not (folder / n).is_file()]


def _load_cifar(
    name: str, root: Path, download: bool
) -> tuple[dict, dict, tuple[str, ...], dict[str, str]]:
    spec = CIFAR[name]
    folder, missing = _cifar_files(name, root)
    if missing and download:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, spec["torchvision"])
        fetch_into(
            root,
            name,
            lambda tmp: dataset_class(root=str(tmp), train=True, download=True),
            f"put {spec['folder']}/ in {root} or pass --data-root DIR",
        )
        folder, missing = _cifar_files(name, root)
    if missing:
        reason = "" if download else " and download is off ([data] download = false)"
        raise DataError(
            f"{name}: {', '.join(str(p) for p in missing)} not found{reason}; put torchvision's "
            f"{spec['folder']}/ folder (the Python version of the data set) in {root}, "
            "or pass --data-root DIR"
        )
    meta_path = folder / spec["meta"][0]
    meta = read_pickle(meta_path)
    if spec["meta"][1] not in meta:
        raise DataError(f"{meta_path} lacks {spec['meta'][1].decode()}: not {name}'s meta file")
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["meta"][1]])
    images, labels = {}, {}
    for split in ("train", "test"):
        x, y = _cifar_split(folder, spec[split], spec["labels"], len(classes))
        images[split], labels[split] = torch.from_numpy(x.copy()), torch.from_numpy(y)
    files = {
        str(folder / n): sha256_file(folder / n)
        for n in [*spec["train"], *spec["test"], spec["meta"][0]]
    }
    return images, labels, classes, files


def _svhn_path(root: Path, split: str) -> Path | None:
    for folder in (root, root / "svhn", root / "SVHN"):
        if (folder / SVHN_FILES[split]).is_file():
            return folder / SVHN_FILES[split]
    return None


def _load_svhn(root: Path, download: bool) -> tuple[dict, dict, tuple[str, ...], dict[str, str]]:
    try:
        import scipy.io
    except ImportError:
        raise DataError(
            "svhn is stored as MATLAB .mat files, which need scipy: pip install scipy"
        ) from None
    paths = {split: _svhn_path(root, split) for split in SVHN_FILES}
    if None in paths.values() and download:
        import torchvision.datasets

        def fetch(tmp: Path) -> None:
            for split in SVHN_FILES:
                if paths[split] is None:
                    torchvision.datasets.SVHN(root=str(tmp), split=split, download=True)

        fetch_into(
            root,
            "svhn",
            fetch,
            f"put {', '.join(SVHN_FILES.values())} in {root} or pass --data-root DIR",
        )
        paths = {split: _svhn_path(root, split) for split in SVHN_FILES}
    missing = [SVHN_FILES[s] for s, p in paths.items() if p is None]
    if missing:
        reason = "" if download else " and download is off ([data] download = false)"
        raise DataError(
            f"svhn: {', '.join(missing)} not found in {root} or {root / 'svhn'}{reason}; "
            "put the files there, or pass --data-root DIR"
        )
    images, labels = {}, {}
    for split, path in paths.items():
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as exc:
            raise DataError(
                f"{path} is not a readable .mat file ({type(exc).__name__}: {exc})"
            ) from None
        if "X" not in mat or "y" not in mat:
            raise DataError(f"{path} lacks X or y: not an SVHN file")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
        if x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise DataError(
                f"{path}: X is {x.dtype} {x.shape}, expected uint8 [32, 32, 3, {len(y)}]"
            )
        y = np.where(y == 10, 0, y)  # SVHN stores the digit 0 as label 10
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{path} has label {int(y.max())}, outside 0..10")
        images[split] = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
        labels[split] = torch.from_numpy(y)
    files = {str(p): sha256_file(p) for p in paths.values()}
    return images, labels, tuple(str(i) for i in range(10)), files


class TorchvisionDataConfig(ImageDataCommon):
    """torchvision's RGB sets, read from their own on-disk formats."""

    name: Literal["cifar10", "cifar100", "svhn"]
    verify: Literal["warn", "strict", "off"] = (
        "warn"  # files against published checksums, as for IDX sets
    )


@register_source
class Torchvision(DataSource):
    names = (*CIFAR, "svhn")
    Config = TorchvisionDataConfig
    named = True

    def load(self, config: TorchvisionDataConfig, root: Path) -> Dataset:
        """Load cifar10, cifar100 or svhn into memory (see the module docstring)."""
        name, root = config.name, Path(root).expanduser()
        if name == "svhn":
            images, labels, classes, files = _load_svhn(root, config.download)
        else:
            images, labels, classes, files = _load_cifar(name, root, config.download)
        for split in ("train", "test"):
            if len(labels[split]) == 0:
                raise DataError(f"{name}: the {split} split holds no images")
        split_dataset(images, labels, config.validation, config.seed)
        mean, std = channel_stats(images["train"])
        data = Dataset(
            name=name,
            images=images,
            labels=labels,
            classes=classes,
            mean=mean,
            std=std,
            files=files,
            settings={"validation": config.validation, "seed": config.seed},
        )
        check_published(name, data.files, config.verify)
        return data

    def peek(self, config: TorchvisionDataConfig, root: Path | None) -> tuple[tuple[int, ...], int]:
        """Input shape and number of classes, known without reading any file."""
        return SHAPE, {"cifar10": 10, "cifar100": 100, "svhn": 10}[config.name]
