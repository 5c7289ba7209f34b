"""Tables from CSV files: one row per sample, a label column and numeric feature columns.

    [data]
    name = "csv"
    train = "breast_cancer.csv"     # relative to [data] root, else to the pipeline file
    test_fraction = 0.2             # or test = "test.csv"
    label = "diagnosis"
    features = ["mean radius", ...] # default: every column but the label

The first row names the columns. Labels may be text or integers: the class names are the
distinct label values as strings, sorted (numerically when every label is an integer),
and index = output position. Every feature value must be a number: an empty or
non-numeric one is an error naming the file, row (1-based, the header is row 1) and
column. Features are standardized with the training part's mean and std (after the test
and validation splits are held out); a constant feature gets std 1.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.data.base import OwnFilesSource
from compress.data.dataset import Dataset
from compress.data.registry import register_source
from compress.data.split import split_dataset
from compress.errors import DataError, closest
from compress.files import sha256_file
from compress.sections import DataCommon


class CsvDataConfig(DataCommon):
    """A table: one row per sample, a label column and numeric feature columns."""

    name: Literal["csv"]
    train: str
    test: str | None = None
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = (
        None  # without test: default 0.2
    )
    label: str
    features: Annotated[list[str], Field(min_length=1)] | None = None  # default: every other column

    @model_validator(mode="after")
    def _one_test_source(self) -> CsvDataConfig:
        if self.test is not None and self.test_fraction is not None:
            raise ValueError("set either test (a file) or test_fraction, not both")
        return self


def _did_you_mean(name: str, header: list[str]) -> str:
    close = closest(name, header)
    return f"; did you mean {close!r}?" if close else ""


def check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"CSV file {path} {'is not a file' if path.exists() else 'does not exist'}")


def read_table(
    path: Path, label: str, features: list[str] | None
) -> tuple[list[str], np.ndarray, list[str]]:
    """(feature names, float32 values [N, F], label strings) of one CSV file."""
    check_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not a UTF-8 text file (byte {exc.start}): is it a CSV file?"
        ) from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{path} is empty: expected a header row naming the columns")
    header = [cell.strip() for cell in rows[0]]
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(f"{path}: column {duplicates[0]!r} appears more than once in the header")
    if label not in header:
        raise DataError(
            f"{path} has no label column {label!r}{_did_you_mean(label, header)} "
            f"(columns: {', '.join(header)})"
        )
    names = features if features is not None else [c for c in header if c != label]
    missing = [c for c in names if c not in header]
    if missing:
        raise DataError(
            f"{path} has no column {missing[0]!r} named in [data] features"
            f"{_did_you_mean(missing[0], header)} (columns: {', '.join(header)})"
        )
    if label in names:
        raise DataError(f"[data] features names the label column {label!r}")
    if not names:
        raise DataError(f"{path} has no feature columns besides the label {label!r}")
    columns = [header.index(c) for c in names]
    label_column = header.index(label)
    body = [
        (number, row)
        for number, row in enumerate(rows[1:], start=2)
        if any(cell.strip() for cell in row)
    ]
    if not body:
        raise DataError(f"{path} holds a header but no rows")
    values = np.empty((len(body), len(names)), dtype=np.float32)
    labels = []
    for i, (number, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path}, row {number}: {len(row)} cells, "
                f"but the header names {len(header)} columns"
            )
        labels.append(_label(path, number, label, row[label_column]))
        for j, (name, column) in enumerate(zip(names, columns, strict=True)):
            values[i, j] = _number(path, number, name, row[column])
    return names, values, labels


def _number(path: Path, row: int, column: str, cell: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(f"{path}, row {row}, column {column!r}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}, row {row}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}, row {row}, column {column!r}: {text!r} is not a finite number")
    return value


def _label(path: Path, row: int, column: str, cell: str) -> str:
    text = cell.strip()
    if not text:
        raise DataError(f"{path}, row {row}, column {column!r}: missing label")
    return text


def class_names(labels: list[str]) -> list[str]:
    """Distinct labels, sorted: numerically when all are integers (so 2 comes before 10)."""
    distinct = set(labels)
    try:
        return (
            [str(v) for v in sorted({int(v) for v in distinct})]
            if all(_is_int(v) for v in distinct)
            else sorted(distinct)
        )
    except ValueError:
        return sorted(distinct)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _canonical(label: str) -> str:
    return str(int(label)) if _is_int(label) else label


def resolve(base: Path, name: str) -> Path:
    """A [data] train/test file name, taken from `base` unless absolute."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


@register_source
class Csv(OwnFilesSource):
    names = ("csv",)
    Config = CsvDataConfig

    def check(self, config: CsvDataConfig, root: Path) -> None:
        for name in (config.train, config.test):
            if name is not None:
                check_file(resolve(root, name))

    def load(self, config: CsvDataConfig, root: Path) -> Dataset:
        """The CSV table(s) of `config` as a Dataset; relative file names are taken from `root`."""
        train_path = resolve(root, config.train)
        names, x_train, y_train = read_table(train_path, config.label, config.features)
        files = {str(train_path): sha256_file(train_path)}
        y_train = [_canonical(v) for v in y_train]
        if config.test is not None:
            test_path = resolve(root, config.test)
            test_names, x_test, y_test = read_table(
                test_path, config.label, config.features or names
            )
            y_test = [_canonical(v) for v in y_test]
            if test_names != names:
                raise DataError(f"{test_path} has other feature columns than {train_path}")
            unknown = sorted(set(y_test) - set(y_train))
            if unknown:
                raise DataError(
                    f"{test_path} has label {unknown[0]!r}, which {train_path} never has "
                    f"(its labels: {', '.join(class_names(y_train))})"
                )
            files[str(test_path)] = sha256_file(test_path)
        classes = class_names(y_train)
        if len(classes) < 2:
            raise DataError(
                f"{train_path}: every row has label {classes[0]!r}; "
                "classification needs at least two"
            )
        index = {c: i for i, c in enumerate(classes)}
        images = {"train": torch.from_numpy(x_train)}
        labels = {"train": torch.tensor([index[v] for v in y_train], dtype=torch.long)}
        if config.test is not None:
            images["test"] = torch.from_numpy(x_test)
            labels["test"] = torch.tensor([index[v] for v in y_test], dtype=torch.long)
        split_dataset(images, labels, config.validation, config.seed, config.test_fraction)
        x = images["train"].double()
        mean = x.mean(0)
        std = x.std(0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        settings = {
            "source": "csv",
            "label": config.label,
            "features": names,
            "validation": config.validation,
            "seed": config.seed,
            "test_fraction": config.test_fraction,
        }
        return Dataset(
            name=table_name(train_path),
            images=images,
            labels=labels,
            classes=tuple(classes),
            mean=tuple(mean.tolist()),
            std=tuple(std.tolist()),
            files=files,
            kind="table",
            feature_names=tuple(names),
            settings=settings,
        )

    def peek(self, config: CsvDataConfig, root: Path) -> tuple[tuple[int, ...], int] | None:
        """Input shape and number of classes (reads the training file)."""
        path = resolve(root, config.train)
        if not path.is_file():
            return None
        names, _, labels = read_table(path, config.label, config.features)
        return (len(names),), len({_canonical(v) for v in labels})


def table_name(path: Path) -> str:
    """The data set's name in reports and metadata: the file with its folder, "wine/train.csv"
    (a file's stem alone, "train", would not say which table)."""
    folder = path.resolve().parent.name
    return f"{folder}/{path.name}" if folder else path.name
