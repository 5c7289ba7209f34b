"""Data sources by name, each giving a Dataset held in memory as tensors.

    data = load_data(config.data, base_dir="pipelines", override=None)
    for x, y in data.batches("train", batch_size=64, generator=g): ...

`[data] name` picks the source (compress.data.registry), one module each, its [data]
section's typed config beside its loader:

| name | module | reads |
|---|---|---|
| mnist, fashion-mnist, kmnist | idx | IDX files (flat, or torchvision's `<Class>/raw`) |
| cifar10, cifar100, svhn | torchvision_sets | CIFAR's Python batches, SVHN's .mat files |
| imagefolder | imagefolder | `root/train/<class>/<image>` (and `test/`), decoded once to a cache |
| csv | csv_table | a CSV table with a label column |
| arrays | arrays | numpy arrays x and y: an .npz, or a memory-mapped .npy pair |
| audiofolder | audiofolder | `root/train/<class>/<clip>.wav` (`test/`, `val/`), Speech Commands |

A new source is a module with a DataSource subclass (compress.data.base), registered with
@register_source, and its name added to BUILTIN in compress.data.registry.

Every source holds a seeded, stratified `validation` part of its training split out as
split "val" (compress.data.split), unless its files have a validation split of their own
(audiofolder's `val/`, Speech Commands' validation_list.txt): every choice is made on it,
the test split is only reported. Batches are cut from in-memory tensors by index, several
times faster than a per-sample DataLoader.
"""

from __future__ import annotations

from pathlib import Path

from compress.data import published
from compress.data.base import DataSource
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
from compress.data.registry import get_source, list_sources, register_source
from compress.errors import DataError
from compress.sections import DataCommon

__all__ = [
    "DATASETS",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "SPLITS",
    "SPLIT_FILES",
    "DataSource",
    "Dataset",
    "DatasetSpec",
    "channel_stats",
    "check_files",
    "data_root",
    "get_source",
    "list_sources",
    "load_data",
    "load_dataset",
    "locate_files",
    "peek_data",
    "published",
    "read_idx",
    "register_source",
    "source_of",
]


def source_of(config: DataCommon) -> DataSource:
    """The source that reads the [data] section `config`."""
    return get_source(config.name)()


def load_dataset(
    name: str, root: str | Path, download: bool = True, validation: float = 0.1, seed: int = 0
) -> Dataset:
    """A data set known by name (IDX or torchvision's), read from under `root`, its files not
    compared with the published checksums."""
    known = [n for n, source in list_sources().items() if source.named]
    if name not in known:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(known)}")
    source = get_source(name)
    # Built unvalidated: a library caller may hold nothing out (validation = 0), which a
    # pipeline file may not.
    config = source.Config.model_construct(
        name=name, download=download, validation=validation, seed=seed, verify="off"
    )
    return source().load(config, Path(root))


def data_root(
    config: DataCommon, base_dir: str | Path = ".", override: str | Path | None = None
) -> Path | None:
    """The folder `config` reads from. Named data sets (MNIST, CIFAR, ...): --data-root, else
    [data] root (relative to the pipeline file's folder), else ./data. --data-root is the
    folder of the named data sets, so it does not replace a pipeline's own files: a CSV
    table's files are relative to [data] root, else to the pipeline file; an image folder
    is [data] root, else --data-root (it needs one of them)."""
    return source_of(config).root(config, base_dir, override)


def check_files(
    config: DataCommon, base_dir: str | Path = ".", override: str | Path | None = None
) -> None:
    """That the folders and files `config` names exist, without reading them: a root given
    in [data] or with --data-root, and what the source checks (an image folder's train/, a
    CSV table's files). Cheap, so `run` and `validate` call it before anything is loaded."""
    source = source_of(config)
    root = source.root(config, base_dir, override)
    explicit = override is not None or config.root is not None
    if explicit and root is not None and not root.is_dir():
        given = (
            "--data-root"
            if override is not None and root == Path(override).expanduser()
            else "[data] root"
        )
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data root {root} ({given}) {what}")
    source.check(config, root)


def load_data(
    config: DataCommon, base_dir: str | Path = ".", override: str | Path | None = None
) -> Dataset:
    """The Dataset a pipeline's [data] section describes."""
    source = source_of(config)
    return source.load(config, source.root(config, base_dir, override))


def peek_data(
    config: DataCommon, base_dir: str | Path = ".", override: str | Path | None = None
) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) without decoding the data, when that can be known
    cheaply; None when only reading the data would tell (`compress validate` then checks
    the model without them)."""
    source = source_of(config)
    return source.peek(config, source.root(config, base_dir, override))
