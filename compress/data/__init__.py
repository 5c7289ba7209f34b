"""Data sources by name, each giving a Dataset held in memory as tensors.

    data = load_data(config.data, base_dir="pipelines", data_root=None)
    for x, y in data.batches("train", batch_size=64, generator=g): ...

`[data] name` picks the source, one module each:

| name | module | reads |
|---|---|---|
| mnist, fashion-mnist, kmnist | idx | IDX files (flat, or torchvision's `<Class>/raw`) |
| cifar10, cifar100, svhn | torchvision_sets | CIFAR's Python batches, SVHN's .mat files |
| imagefolder | imagefolder | `root/train/<class>/<image>` (and `test/`), decoded once into a cache |
| csv | csv_table | a CSV table with a label column |

Every source holds a seeded, stratified `validation` part of its training split out as
split "val" (compress.data.split): every choice is made on it, the test split is only
reported. Batches are cut from in-memory tensors by index, several times faster than a
per-sample DataLoader.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from compress.data import csv_table, idx, imagefolder, published, torchvision_sets
from compress.data.dataset import SPLITS, Dataset, channel_stats
from compress.data.idx import (
    DATASETS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    SPLIT_FILES,
    DatasetSpec,
    locate_files,
    read_idx,
)
from compress.errors import DataError

__all__ = [
    "DATASETS", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "SOURCES", "SPLITS", "SPLIT_FILES", "Dataset",
    "DatasetSpec", "channel_stats", "check_files", "data_root", "load_data", "load_dataset", "locate_files",
    "peek_data", "read_idx",
]

# name -> the module that reads it
SOURCES: dict[str, ModuleType] = {
    **{name: idx for name in idx.DATASETS},
    **{name: torchvision_sets for name in (*torchvision_sets.CIFAR, "svhn")},
    "imagefolder": imagefolder,
    "csv": csv_table,
}


def load_dataset(name: str, root: str | Path, download: bool = True, validation: float = 0.1, seed: int = 0) -> Dataset:
    """A data set known by name (IDX or torchvision's), read from under `root`."""
    if SOURCES.get(name) is idx:
        return idx.load(name, root, download, validation, seed)
    if SOURCES.get(name) is torchvision_sets:
        return torchvision_sets.load(name, root, download, validation, seed)
    known = [n for n, module in SOURCES.items() if module in (idx, torchvision_sets)]
    raise DataError(f"unknown data set {name!r}; known: {', '.join(known)}")


def data_root(config, base_dir: str | Path = ".", override: str | Path | None = None) -> Path | None:
    """The folder `config` reads from. Named data sets (MNIST, CIFAR, ...): --data-root, else
    [data] root (relative to the pipeline file's folder), else ./data. --data-root is the
    folder of the named data sets, so it does not replace a pipeline's own files: a CSV
    table's files are relative to [data] root, else to the pipeline file; an image folder
    is [data] root, else --data-root (it needs one of them)."""
    own_files = config.name == "csv" or (config.name == "imagefolder" and config.root is not None)
    if override is not None and not own_files:
        return Path(override).expanduser()
    if config.root is not None:
        path = Path(config.root).expanduser()
        return path if path.is_absolute() else Path(base_dir) / path
    if config.name == "imagefolder":
        return None
    if config.name == "csv":
        return Path(base_dir)
    return Path("data")


def check_files(config, base_dir: str | Path = ".", override: str | Path | None = None) -> None:
    """That the folders and files `config` names exist, without reading them: a root given
    in [data] or with --data-root, an image folder's train/, a CSV table's files. Cheap, so
    `run` and `validate` call it before anything is loaded."""
    root = data_root(config, base_dir, override)
    explicit = override is not None or config.root is not None
    if explicit and root is not None and not root.is_dir():
        source = "--data-root" if override is not None and root == Path(override).expanduser() else "[data] root"
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data root {root} ({source}) {what}")
    if config.name == "imagefolder":
        if root is None:
            raise DataError(IMAGEFOLDER_NEEDS_ROOT)
        imagefolder.check_root(root)
    if config.name == "csv":
        for name in (config.train, config.test):
            if name is not None:
                csv_table.check_file(csv_table.resolve(root, name))


IMAGEFOLDER_NEEDS_ROOT = "[data] name = 'imagefolder' needs root: the folder holding train/<class>/<image>"


def load_data(config, base_dir: str | Path = ".", override: str | Path | None = None) -> Dataset:
    """The Dataset a pipeline's [data] section describes."""
    root = data_root(config, base_dir, override)
    if config.name == "imagefolder":
        if root is None:
            raise DataError(IMAGEFOLDER_NEEDS_ROOT)
        return imagefolder.load(config, root)
    if config.name == "csv":
        return csv_table.load(config, root)
    data = load_dataset(config.name, root, config.download, config.validation, config.seed)
    published.check_published(config.name, data.files, getattr(config, "verify", "warn"))
    return data


def peek_data(config, base_dir: str | Path = ".", override: str | Path | None = None) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) without decoding the data, when that can be known
    cheaply; None when only reading the data would tell (`compress validate` then checks
    the model without them)."""
    module = SOURCES[config.name]
    if module in (idx, torchvision_sets):
        return module.peek(config.name)
    root = data_root(config, base_dir, override)
    return None if root is None else module.peek(config, root)
