"""Arrays a user already turned into numbers: `.npz` files or pairs of `.npy` files.

    [data]
    name = "arrays"
    train = "train.npz"             # arrays x [N, ...] and y [N]; relative to [data] root,
                                    # else to the pipeline file
    test = "test.npz"               # or test_fraction = 0.2 (the default without test)
    # train = ["x.npy", "y.npy"]    # the same as a pair of .npy files: memory-mapped
    normalize = "channel"           # "feature" | "channel" | "none"

A sample may have any shape: features [F], sequences [T, F], spectrograms [1, H, W],
images [C, H, W]. Labels are integers or strings; the class names are the distinct labels
as strings, sorted (numerically for integers), index = output position, as for CSV tables.

An `.npy` pair streams: x is opened with `np.load(path, mmap_mode="r")` and every batch is
gathered from the map (compress.data.store), so a data set larger than memory trains with
flat memory. numpy cannot map a member of an `.npz`, so an `.npz` is read into memory.
Pickled arrays are refused (allow_pickle stays False).

Normalization, with mean and std from the training part only (after the test and
validation parts are held out), computed in chunks over the samples:

- "channel" (the default): one mean and std per channel: the last axis of a sequence
  [T, F] (its F signals), the first of [C, H, W] and of higher ranks, each feature of [F];
- "feature": one mean and std per element of the sample shape;
- "none": the raw values (mean 0, std 1).

A constant channel or element gets std 1. The ONNX metadata `preprocessing` says all a
deployer needs: {"normalize", "mean", "std" (nested lists that broadcast against one
sample), "input_shape", "dtype": "float32"}: input = (float32(x) - mean) / std.

Each file is fingerprinted by its full SHA-256, read in 1 MB chunks (flat memory; seconds
for a few GB, small beside an epoch over them). No shortcut by size and modification time:
a file rewritten within one clock tick would pass for the old one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.data.base import OwnFilesSource
from compress.data.csv_table import resolve, table_name
from compress.data.dataset import Dataset
from compress.data.registry import register_source
from compress.data.split import split_dataset
from compress.data.store import SampleStore
from compress.errors import DataError
from compress.files import sha256_file
from compress.sections import DataCommon

Files = str | Annotated[list[str], Field(min_length=2, max_length=2)]
CHUNK = 4096  # samples per pass of the finite check and the statistics


class ArraysDataConfig(DataCommon):
    """Arrays x (samples) and y (labels): an .npz file, or [x.npy, y.npy]."""

    name: Literal["arrays"]
    train: Files
    test: Files | None = None
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = (
        None  # without test: default 0.2
    )
    normalize: Literal["feature", "channel", "none"] = "channel"

    @model_validator(mode="after")
    def _one_test_source(self) -> ArraysDataConfig:
        if self.test is not None and self.test_fraction is not None:
            raise ValueError("set either test (a file) or test_fraction, not both")
        return self


def paths(base: Path, files: str | list[str]) -> list[Path]:
    """The one .npz file or the two .npy files that [data] train or test names."""
    return [resolve(base, name) for name in ([files] if isinstance(files, str) else files)]


def check_paths(found: list[Path]) -> None:
    for path in found:
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise DataError(f"arrays file {path} {what}")
    if len(found) == 1 and found[0].suffix != ".npz":
        raise DataError(
            f"{found[0]}: one file must be an .npz holding x and y; "
            'give a pair of .npy files as ["x.npy", "y.npy"]'
        )


def _unreadable(path: Path, exc: Exception, what: str) -> DataError:
    if "allow_pickle" in str(exc):  # numpy refuses object arrays without it
        return DataError(f"{path} holds Python objects: only numeric arrays are read")
    return DataError(f"cannot read {path} as {what}: {exc}")


def _open_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _unreadable(path, exc, "an .npy array") from None


def _open_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                held = ", ".join(arrays.files) or "none"
                raise DataError(
                    f"{path} has no array {missing[0]!r} (it holds: {held}): "
                    "expected x (the samples) and y (the labels)"
                )
            return arrays["x"], arrays["y"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, exc, "an .npz file") from None


def read_arrays(found: list[Path]) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, what to name them by in messages) of one [data] train or test entry: x mapped
    from an .npy file, read from an .npz."""
    if len(found) == 1:
        x, y = _open_npz(found[0])
        where = f"{found[0]}: "
        check_arrays(x, y, f"{where}x", f"{where}y")
        return x, y, where
    x, y = _open_npy(found[0], mmap=True), _open_npy(found[1], mmap=False)
    check_arrays(x, y, str(found[0]), str(found[1]))
    return x, y, f"{found[0]}: "


def check_arrays(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> None:
    """Shapes and types, from the headers alone (cheap even for a mapped file)."""
    for array, name in ((x, x_name), (y, y_name)):
        if array.dtype == object:
            raise DataError(f"{name} holds Python objects: only numeric arrays are read")
        if array.ndim == 0:
            raise DataError(f"{name} is a single value (a 0-d array): expected one per sample")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{x_name} has dtype {x.dtype}: samples must be integers or floats")
    if x.ndim < 2:
        raise DataError(
            f"{x_name} has shape {x.shape}: expected samples along the first axis, "
            "[N, F] or [N, T, F] or [N, C, H, W]"
        )
    if y.ndim != 1:
        raise DataError(f"{y_name} has shape {y.shape}: expected one label per sample, [N]")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind in "US"):
        raise DataError(f"{y_name} has dtype {y.dtype}: labels must be integers or strings")
    if len(x) != len(y):
        raise DataError(f"{x_name} holds {len(x)} samples but {y_name} {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{x_name} holds no samples")


def check_finite(x: np.ndarray, name: str) -> None:
    """That every value of x is finite as float32 (what the model reads; a float64 beyond
    its range is inf), read in chunks (a mapped file is not held in memory)."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    store = SampleStore(x)
    for start, chunk in zip(range(0, len(x), CHUNK), store.chunks(CHUNK), strict=True):
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if bad.any():
            sample = chunk[int(np.argmax(bad))]
            value = sample[~np.isfinite(sample)][0]
            at = start + int(np.argmax(bad))
            raise DataError(
                f"{name} holds {value} in sample {at} (as float32): every value must be finite"
            )


def distinct_labels(y: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(the distinct labels as strings, sorted, and each label's position among them): sorted
    numerically for integers (2 before 10), else as text, the order CSV tables use. One
    sort of the labels, whatever their number."""
    distinct, inverse = np.unique(y, return_inverse=True)
    if y.dtype.kind == "S":
        names = [v.decode("utf-8", "replace") for v in distinct.tolist()]
    else:
        names = [str(v) for v in distinct.tolist()]
    return names, inverse.reshape(-1)


def channel_axes(shape: tuple[int, ...], normalize: str) -> tuple[int, ...]:
    """The axes of a batch [N, *shape] that one mean and std are taken over."""
    if normalize == "feature" or len(shape) == 1:
        return (0,)
    channel = len(shape) if len(shape) == 2 else 1  # [T, F]: the last; [C, ...]: the first
    return tuple(a for a in range(len(shape) + 1) if a != channel)


def statistics(store: SampleStore, normalize: str) -> tuple[list | float, list | float]:
    """Mean and std (nested lists broadcasting against one sample) of the training samples,
    accumulated in float64 over chunks."""
    if normalize == "none":
        return 0.0, 1.0
    axes = channel_axes(store.shape[1:], normalize)
    total = squares = None
    count = 0
    for chunk in store.chunks(CHUNK):
        part = chunk.sum(axis=axes, keepdims=True, dtype=np.float64)
        part_squares = np.square(chunk).sum(axis=axes, keepdims=True, dtype=np.float64)
        total = part if total is None else total + part
        squares = part_squares if squares is None else squares + part_squares
        count += chunk.size // part.size
    mean = total / count
    std = np.sqrt(np.clip(squares / count - mean * mean, 0, None))
    std = np.where(std > 0, std, 1.0)
    return mean[0].tolist(), std[0].tolist()


def sample_shape(found: list[Path]) -> tuple[int, ...]:
    """One sample's shape from the array header alone (an .npz member is not decompressed)."""
    if len(found) == 2:
        return tuple(_open_npy(found[0], mmap=True).shape[1:])
    try:
        with zipfile.ZipFile(found[0]) as archive, archive.open("x.npy") as f:
            version = np.lib.format.read_magic(f)
            shape = (
                np.lib.format.read_array_header_1_0(f)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(f)
            )[0]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        shape = _open_npz(found[0])[0].shape  # to say what is wrong with it
    return tuple(int(d) for d in shape[1:])


@register_source
class Arrays(OwnFilesSource):
    names = ("arrays",)
    Config = ArraysDataConfig

    def check(self, config: ArraysDataConfig, root: Path) -> None:
        for files in (config.train, config.test):
            if files is not None:
                check_paths(paths(root, files))

    def load(self, config: ArraysDataConfig, root: Path) -> Dataset:
        """The arrays of `config` as a Dataset; relative file names are taken from `root`."""
        train_paths = paths(root, config.train)
        check_paths(train_paths)
        x, y, where = read_arrays(train_paths)
        check_finite(x, f"{where}x")
        images, raw_labels = {"train": x}, {"train": y}
        files = {str(p): sha256_file(p) for p in train_paths}
        test_where = ""
        if config.test is not None:
            test_paths = paths(root, config.test)
            check_paths(test_paths)
            x_test, y_test, test_where = read_arrays(test_paths)
            if x_test.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{test_where}samples of shape {list(x_test.shape[1:])}, "
                    f"but the training samples have shape {list(x.shape[1:])}"
                )
            check_finite(x_test, f"{test_where}x")
            images["test"], raw_labels["test"] = x_test, y_test
            files.update({str(p): sha256_file(p) for p in test_paths})
        classes, labels = self._labels(raw_labels, where, test_where)
        stores = {split: SampleStore(v) for split, v in images.items()}
        split_dataset(stores, labels, config.validation, config.seed, config.test_fraction)
        mean, std = statistics(stores["train"], config.normalize)
        return Dataset(
            name=table_name(train_paths[0]),
            images=stores,
            labels=labels,
            classes=tuple(classes),
            mean=mean,
            std=std,
            files=files,
            kind="array",
            normalization=config.normalize,
            settings={
                "source": "arrays",
                "normalize": config.normalize,
                "validation": config.validation,
                "seed": config.seed,
                "test_fraction": config.test_fraction,
            },
        )

    @staticmethod
    def _labels(
        raw: dict[str, np.ndarray], where: str, test_where: str
    ) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The class names (the training labels') and each split's class indices."""
        classes, inverse = distinct_labels(raw["train"])
        if len(classes) < 2:
            raise DataError(
                f"{where}every label is {classes[0]!r}; classification needs at least two"
            )
        labels = {"train": torch.from_numpy(inverse.astype(np.int64))}
        if "test" in raw:
            names, inverse = distinct_labels(raw["test"])
            unknown = [n for n in names if n not in classes]
            if unknown:
                raise DataError(
                    f"{test_where}y has label {unknown[0]!r}, which the training labels never "
                    f"have (they have: {', '.join(classes)})"
                )
            position = np.array([classes.index(n) for n in names], dtype=np.int64)
            labels["test"] = torch.from_numpy(position[inverse])
        return classes, labels

    def peek(self, config: ArraysDataConfig, root: Path) -> tuple[tuple[int, ...], int] | None:
        """Input shape (from the header of x) and number of classes (reads the labels)."""
        found = paths(root, config.train)
        if not all(p.is_file() for p in found):
            return None
        check_paths(found)
        try:
            if len(found) == 1:
                with np.load(found[0], allow_pickle=False) as arrays:
                    y = arrays["y"]
            else:
                y = np.load(found[1], allow_pickle=False)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile):
            return None  # loading says what is wrong
        if y.ndim != 1 or y.dtype == object:
            return None
        return sample_shape(found), len(distinct_labels(y)[0])
