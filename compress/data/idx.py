"""MNIST-style data sets from their IDX files: mnist, fashion-mnist and kmnist.

    [data]
    name = "mnist"          # or fashion-mnist, kmnist
    root = "../shared/data" # else --data-root, else ./data

The four IDX files (gzipped or not) are found in a flat folder, `<root>/<name>` or
torchvision's `<root>/<Class>/raw` layout (KMNIST too: `<root>/KMNIST/raw`). When they are
missing and `download` is on, torchvision downloads them (compress.data.download: a failed
download leaves nothing behind); otherwise the error says where to put them. Each file's
magic number, shape and length are checked, and (`verify`) compared with the data set's
published checksums (compress.data.published).
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from compress.data.base import DataSource, ImageDataCommon
from compress.data.dataset import Dataset
from compress.data.download import fetch_into
from compress.data.published import check_published
from compress.data.registry import register_source
from compress.data.split import split_dataset
from compress.errors import DataError
from compress.files import sha256_file

log = logging.getLogger(__name__)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a data set before its files are read."""

    name: str
    folders: tuple[str, ...]  # sub-folders of the data root to look in
    system_dirs: tuple[str, ...]  # folders outside the data root (distribution packages)
    torchvision_class: str
    classes: tuple[str, ...]
    mean: float  # of pixel/255 over the training set
    std: float
    image_shape: tuple[int, int] = (28, 28)  # height, width: a file holding others is refused

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample as a model sees it (known before any file is read)."""
        return (1, *self.image_shape)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        folders=("", "mnist", "MNIST/raw", "MNIST"),
        system_dirs=(),
        torchvision_class="MNIST",
        classes=tuple(str(i) for i in range(10)),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        folders=("", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        torchvision_class="FashionMNIST",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mean=0.2860,
        std=0.3530,
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        folders=("", "kmnist", "KMNIST/raw", "KMNIST"),
        system_dirs=(),
        torchvision_class="KMNIST",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mean=0.1918,
        std=0.3483,
    ),
}


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (gzipped or raw), checking its magic number, shape and length."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is not a valid gzip file ({exc}); download it again") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"for an IDX {kind} file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    actual = len(raw) - header
    if actual != expected:
        raise DataError(
            f"{path} is truncated or corrupt: header says {shape} ({expected} bytes of data), "
            f"file holds {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for directory in dirs:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                return candidate
    return None


def _candidate_dirs(spec: DatasetSpec, root: Path) -> list[Path]:
    return [root / folder if folder else root for folder in spec.folders] + [
        Path(d) for d in spec.system_dirs
    ]


def locate_files(spec: DatasetSpec, root: Path) -> dict[str, Path]:
    """The IDX files of `spec` found under `root`, by role ("train-images", ...)."""
    dirs = _candidate_dirs(spec, root)
    found = {}
    for split, stems in SPLIT_FILES.items():
        for kind, stem in zip(("images", "labels"), stems, strict=True):
            path = _find_file(dirs, stem)
            if path is not None:
                found[f"{split}-{kind}"] = path
    return found


def _missing(found: dict[str, Path]) -> list[str]:
    return [
        stem
        for split, stems in SPLIT_FILES.items()
        for kind, stem in zip(("images", "labels"), stems, strict=True)
        if f"{split}-{kind}" not in found
    ]


def _download(spec: DatasetSpec, root: Path) -> None:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)

    def fetch(folder: Path) -> None:
        for train in (True, False):
            dataset_class(root=str(folder), train=train, download=True)

    fetch_into(root, spec.name, fetch, f"put the IDX files in {root} or pass --data-root DIR")


class IdxDataConfig(ImageDataCommon):
    """MNIST-style sets read from their IDX files."""

    name: Literal["mnist", "fashion-mnist", "kmnist"] = "mnist"
    # Files against the data set's published checksums (compress.data.published): warn names
    # each file that differs (another data set's files are named as such); strict makes that
    # an error; off skips the check.
    verify: Literal["warn", "strict", "off"] = "warn"


@register_source
class Idx(DataSource):
    names = tuple(DATASETS)
    Config = IdxDataConfig
    named = True

    def load(self, config: IdxDataConfig, root: Path) -> Dataset:
        """Load a named IDX data set into memory, downloading it with torchvision if it is
        missing (`download`); a seeded, stratified `validation` part of the training split
        is held out as split "val"."""
        spec = DATASETS[config.name]
        root = Path(root).expanduser()
        files = _files(spec, root, config.download)
        images, labels = _read_splits(spec, files)
        split_dataset(images, labels, config.validation, config.seed)
        log.debug(
            "loaded %s: %d train, %d validation, %d test images from %s",
            spec.name,
            len(labels["train"]),
            len(labels["val"]),
            len(labels["test"]),
            files["train-images"].parent,
        )
        data = Dataset(
            name=spec.name,
            images=images,
            labels=labels,
            classes=spec.classes,
            mean=spec.mean,
            std=spec.std,
            files={str(p): sha256_file(p) for p in files.values()},
            settings={"validation": config.validation, "seed": config.seed},
        )
        check_published(config.name, data.files, config.verify)
        return data

    def peek(self, config: IdxDataConfig, root: Path | None) -> tuple[tuple[int, ...], int]:
        """Input shape and number of classes, known without reading any file."""
        spec = DATASETS[config.name]
        return spec.input_shape, len(spec.classes)


def _files(spec: DatasetSpec, root: Path, download: bool) -> dict[str, Path]:
    """The four IDX files by role, downloaded first when missing and `download` is on."""
    files = locate_files(spec, root)
    if _missing(files) and download:
        try:
            _download(spec, root)
        except DataError as exc:
            raise DataError(
                _missing_message(spec, root, files, str(exc).removeprefix(f"{spec.name}: "))
            ) from None
        files = locate_files(spec, root)
    if _missing(files):
        reason = "download failed" if download else "download is off ([data] download = false)"
        raise DataError(_missing_message(spec, root, files, reason))
    return files


def _read_splits(spec: DatasetSpec, files: dict[str, Path]) -> tuple[dict, dict]:
    """Images [N, 1, H, W] and labels per split; every file is read (and checked) before
    the splits are checked against each other."""
    arrays = {
        key: read_idx(path, IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC)
        for key, path in files.items()
    }
    images, labels = {}, {}
    for split in SPLIT_FILES:
        x, y = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        x_path, y_path = files[f"{split}-images"], files[f"{split}-labels"]
        if len(y) == 0:
            raise DataError(f"{y_path} holds no samples")
        if tuple(x.shape[1:]) != spec.image_shape:
            raise DataError(
                f"{x_path} holds {x.shape[1]}x{x.shape[2]} images, but "
                f"{spec.name} images are {spec.image_shape[0]}x{spec.image_shape[1]}"
            )
        if len(x) != len(y):
            raise DataError(f"{x_path} holds {len(x)} images but {y_path} holds {len(y)} labels")
        if y.size and int(y.max()) >= len(spec.classes):
            raise DataError(
                f"{y_path} has label {int(y.max())}, "
                f"but {spec.name} has {len(spec.classes)} classes"
            )
        images[split] = torch.from_numpy(x.copy()).unsqueeze(1)
        labels[split] = torch.from_numpy(y.astype(np.int64))
    return images, labels


def _missing_message(spec: DatasetSpec, root: Path, found: dict[str, Path], reason: str) -> str:
    where = ", ".join(str(d) for d in _candidate_dirs(spec, root))
    missing = ", ".join(f"{stem}[.gz]" for stem in _missing(found))
    exists = "" if root.exists() else f" (data root {root} does not exist)"
    return (
        f"{spec.name}: {missing} not found{exists} and {reason}. Put the IDX files in one "
        f"of: {where}; or pass --data-root DIR pointing at a folder that holds them"
    )
