"""Bad image folders, CSV tables, CIFAR batches and splits: one `error:` line, exit 2, nothing
written.

Each case writes its own tiny files under tmp_path, runs `compress run` (and `compress
validate` where the mistake is in the pipeline file) and checks the message, the exit
status and that no file appeared (the image cache included: it lives under tmp_path here).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from data_files import table_rows, write_cifar10, write_csv, write_image_folder
from tiny_mnist import files_under, pipeline_text

from compress.cli import main

CSV_HEADER = ["x1", "x2", "x3", "diagnosis"]


def folder(**kwargs) -> Callable[[Path], None]:
    return lambda tmp: write_image_folder(tmp / "photos", **kwargs)


def table(
    rows: list[list] | None = None, header: list[str] = CSV_HEADER, name: str = "t.csv"
) -> Callable[[Path], None]:
    return lambda tmp: write_csv(tmp / name, header, rows if rows is not None else table_rows(40))


def corrupt_image(tmp: Path) -> None:
    write_image_folder(tmp / "photos", {"cat": 4, "dog": 4})
    (tmp / "photos" / "train" / "dog" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")


def empty_class(tmp: Path) -> None:
    write_image_folder(tmp / "photos", {"cat": 4, "dog": 4})
    (tmp / "photos" / "train" / "eel").mkdir()


def other_test_classes(tmp: Path) -> None:
    write_image_folder(tmp / "photos", {"cat": 4, "dog": 4}, test={"cat": 2, "fox": 2})


def mixed_sizes(tmp: Path) -> None:
    write_image_folder(tmp / "photos", {"cat": 4, "dog": 4})
    write_image_folder(tmp / "photos", {"cat": 1}, size=(9, 9), suffix=".bmp")


def csv_cell(row: int, column: int, value: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        rows = table_rows(40)
        rows[row][column] = value
        write_csv(tmp / "t.csv", CSV_HEADER, rows)

    return write


def ragged(tmp: Path) -> None:
    path = write_csv(tmp / "t.csv", CSV_HEADER, table_rows(40))
    lines = path.read_text().splitlines()
    lines[5] += ",7"
    path.write_text("\n".join(lines) + "\n")


def hostile_cifar(tmp: Path) -> None:
    root = write_cifar10(tmp / "data")

    class Touch:
        def __reduce__(self):
            return (open, (str(tmp / "code-ran"), "w"))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": Touch(), b"labels": [0]})
    )


def short_cifar_rows(tmp: Path) -> None:
    root = write_cifar10(tmp / "data")
    batch = {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(batch))


def arrays(name: str = "t.npz", **members) -> Callable[[Path], None]:
    """An .npz of sequences x [40, 16, 3] and labels y of two classes, with `members` put in
    their place or beside them (a member given as None is left out)."""

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(0)
        values = {"x": rng.normal(size=(40, 16, 3)).astype(np.float32), "y": np.arange(40) % 2}
        values.update(members)
        np.savez(tmp / name, **{k: v for k, v in values.items() if v is not None})

    return write


def npy_pair(x: np.ndarray, y: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        np.save(tmp / "x.npy", x, allow_pickle=True)
        np.save(tmp / "y.npy", y, allow_pickle=True)

    return write


def with_nan(tmp: Path) -> None:
    x = np.zeros((40, 16, 3), np.float32)
    x[17, 4, 1] = np.nan
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", np.arange(40) % 2)


IMAGES = {
    "name": "imagefolder",
    "root": "photos",
    "download": False,
    "batch_size": 4,
    "eval_batch_size": 100,
}
CSV = {"name": "csv", "train": "t.csv", "label": "diagnosis", "download": False, "batch_size": 8}
CIFAR = {"name": "cifar10", "root": "data", "download": False, "batch_size": 8}
ARRAYS = {"name": "arrays", "train": "t.npz", "download": False, "batch_size": 8}
PAIR = {**ARRAYS, "train": ["x.npy", "y.npy"]}
CNN1D = {"name": "cnn1d", "kwargs": None}
SEQUENCES = np.zeros((40, 16, 3), np.float32)


@dataclass
class Case:
    id: str
    message: str  # regular expression searched in the error line
    data: dict  # the [data] section
    files: Callable[[Path], None] | None = None
    model: dict = field(default_factory=lambda: {"name": "logreg", "kwargs": None})
    validate: bool = False  # also `compress validate` (mistakes in the pipeline file)


CASES = [
    # image folders
    Case(
        "image-corrupt", r"photos/train/dog/002\.png is not a readable image", IMAGES, corrupt_image
    ),
    Case(
        "image-empty-class-folder",
        r"class folder .*photos/train/eel holds no images",
        IMAGES,
        empty_class,
    ),
    Case(
        "image-one-class",
        r"photos/train holds one class only \(cat\): classification needs at least two",
        IMAGES,
        folder(classes={"cat": 5}),
    ),
    Case(
        "image-train-test-classes-differ",
        r"train/ and test/ have different classes \(only in train/: dog; only in test/: fox\)",
        IMAGES,
        other_test_classes,
    ),
    Case(
        "image-no-train-folder",
        r"photos has no train/ folder: expected .*photos/train/<class>/<image>",
        IMAGES,
        lambda tmp: (tmp / "photos" / "test" / "cat").mkdir(parents=True),
    ),
    Case("image-root-missing", r"data root .*photos \(\[data\] root\) does not exist", IMAGES),
    Case(
        "image-sizes-differ",
        r"cat/000\.png is 8x8 but .*cat/000\.bmp is 9x9: set \[data\] image_size = \[h, w\]",
        IMAGES,
        mixed_sizes,
    ),
    Case("image-no-root", r"\[data\] name = 'imagefolder' needs root", {**IMAGES, "root": None}),
    Case(
        "image-test-fraction-with-test-folder",
        r"photos has a test/ folder: remove \[data\] test_fraction",
        {**IMAGES, "test_fraction": 0.2},
        folder(classes={"a": 4, "b": 4}, test={"a": 2, "b": 2}),
    ),
    Case(
        "image-channels-2",
        r"data\.channels: Input should be 1 or 3 \(got 2\)",
        {**IMAGES, "channels": 2},
        folder(),
        validate=True,
    ),
    # CSV tables
    Case(
        "csv-not-a-number",
        r"t\.csv, row 5, column 'x2': 'abc' is not a number",
        CSV,
        csv_cell(3, 1, "abc"),
    ),
    Case(
        "csv-missing-value", r"t\.csv, row 12, column 'x3': missing value", CSV, csv_cell(10, 2, "")
    ),
    Case(
        "csv-missing-label",
        r"t\.csv, row 2, column 'diagnosis': missing label",
        CSV,
        csv_cell(0, 3, " "),
    ),
    Case(
        "csv-no-label-column",
        r"t\.csv has no label column 'class' \(columns: x1, x2, x3, diagnosis\)",
        {**CSV, "label": "class"},
        table(),
    ),
    Case(
        "csv-unknown-feature",
        r"t\.csv has no column 'x9' named in \[data\] features",
        {**CSV, "features": ["x1", "x9"]},
        table(),
    ),
    Case(
        "csv-one-label",
        r"every row has label 'benign'; classification needs at least two",
        CSV,
        table(table_rows(20, labels=("benign",))),
    ),
    Case("csv-ragged-row", r"t\.csv, row 6: 5 cells, but the header names 4 columns", CSV, ragged),
    Case("csv-file-missing", r"CSV file .*t\.csv does not exist", CSV),
    Case(
        "csv-empty",
        r"t\.csv is empty: expected a header row",
        CSV,
        lambda tmp: (tmp / "t.csv").write_text(""),
    ),
    Case(
        "csv-test-has-new-label",
        r"test\.csv has label 'cyst', which .*t\.csv never has",
        {**CSV, "test": "test.csv"},
        lambda tmp: (
            table()(tmp),
            table(table_rows(6, labels=("benign", "cyst"))[1:], name="test.csv")(tmp),
        ),
    ),
    Case(
        "csv-test-and-test-fraction",
        r"data: set either test \(a file\) or test_fraction, not both",
        {**CSV, "test": "t.csv", "test_fraction": 0.2},
        table(),
        validate=True,
    ),
    Case(
        "csv-duplicate-column",
        r"column 'x1' appears more than once",
        CSV,
        table(header=["x1", "x1", "x3", "diagnosis"]),
    ),
    # arrays
    Case("arrays-file-missing", r"arrays file .*t\.npz does not exist", ARRAYS, model=CNN1D),
    Case(
        "arrays-npz-without-y",
        r"t\.npz has no array 'y' \(it holds: x, labels\): expected x \(the samples\)",
        ARRAYS,
        arrays(y=None, labels=np.zeros(40)),
        model=CNN1D,
    ),
    Case(
        "arrays-length-mismatch",
        r"t\.npz: x holds 40 samples but .*t\.npz: y 39 labels",
        ARRAYS,
        arrays(y=np.arange(39) % 2),
        model=CNN1D,
    ),
    Case(
        "arrays-labels-not-1d",
        r"y\.npy has shape \(40, 2\): expected one label per sample, \[N\]",
        PAIR,
        npy_pair(SEQUENCES, np.zeros((40, 2), np.int64)),
        model=CNN1D,
    ),
    Case(
        "arrays-0d",
        r"t\.npz: x is a single value \(a 0-d array\): expected one per sample",
        ARRAYS,
        arrays(x=np.float32(3.0)),
        model=CNN1D,
    ),
    Case(
        "arrays-object-array",
        r"y\.npy holds Python objects: only numeric arrays are read",
        PAIR,
        npy_pair(SEQUENCES, np.array([{"a": 1}] * 40, dtype=object)),
        model=CNN1D,
    ),
    Case(
        "arrays-nan",
        r"x\.npy: x holds nan in sample 17 \(as float32\): every value must be finite",
        PAIR,
        with_nan,
        model=CNN1D,
    ),
    Case(
        "arrays-not-numbers",
        r"t\.npz: x has dtype <U1: samples must be integers or floats",
        ARRAYS,
        arrays(x=np.full((40, 3), "a")),
        model=CNN1D,
    ),
    Case(
        "arrays-float-labels",
        r"t\.npz: y has dtype float64: labels must be integers or strings",
        ARRAYS,
        arrays(y=np.zeros(40)),
        model=CNN1D,
    ),
    Case(
        "arrays-test-shape-differs",
        r"test\.npz: samples of shape \[16, 4\], but the training samples have shape \[16, 3\]",
        {**ARRAYS, "test": "test.npz"},
        lambda tmp: (
            arrays()(tmp),
            arrays("test.npz", x=np.zeros((10, 16, 4), np.float32), y=np.arange(10) % 2)(tmp),
        ),
        model=CNN1D,
    ),
    Case(
        "arrays-one-class",
        r"t\.npz: every label is 'walk'; classification needs at least two",
        ARRAYS,
        arrays(y=np.array(["walk"] * 40)),
        model=CNN1D,
    ),
    Case(
        "arrays-test-and-test-fraction",
        r"data: set either test \(a file\) or test_fraction, not both",
        {**ARRAYS, "test": "t.npz", "test_fraction": 0.2},
        arrays(),
        model=CNN1D,
        validate=True,
    ),
    Case(
        "arrays-one-npy",
        r"x\.npy: one file must be an \.npz holding x and y; give a pair of \.npy files",
        {**ARRAYS, "train": "x.npy"},
        npy_pair(SEQUENCES, np.arange(40) % 2),
        model=CNN1D,
    ),
    Case(
        "arrays-pickle-in-npz",
        r"t\.npz holds Python objects: only numeric arrays are read",
        ARRAYS,
        arrays(y=np.array([None] * 40, dtype=object)),
        model=CNN1D,
    ),
    # splits
    Case(
        "split-validation-zero",
        r"data\.validation: Input should be greater than 0 \(got 0\.0\)",
        {**CSV, "validation": 0.0},
        table(),
        validate=True,
    ),
    Case(
        "split-test-fraction-one",
        r"data\.test_fraction: Input should be less than 1 \(got 1\.0\)",
        {**CSV, "test_fraction": 1.0},
        table(),
        validate=True,
    ),
    Case(
        "split-too-few-for-validation",
        r"the validation split is empty: 2 samples are too few for validation = 0\.1",
        {**CSV, "test": "t.csv"},
        table(table_rows(2)),
    ),
    # torchvision's sets
    Case(
        "cifar-missing-offline",
        r"cifar10: .*data_batch_1.* not found and download is off",
        CIFAR,
        lambda tmp: (tmp / "data").mkdir(),
    ),
    Case(
        "cifar-hostile-pickle",
        r"refusing to read .*test_batch: refers to the Python object io\.open",
        CIFAR,
        hostile_cifar,
        model={"name": "resnet20", "kwargs": None},
    ),
    Case(
        "cifar-wrong-row-length",
        r"data_batch_3: data is uint8 \(4, 1024\), expected uint8 \[N, 3072\]",
        CIFAR,
        short_cifar_rows,
        model={"name": "resnet20", "kwargs": None},
    ),
]


def write_case(case: Case, tmp_path: Path) -> Path:
    if case.files is not None:
        case.files(tmp_path)
    data = {k: v for k, v in case.data.items() if v is not None}
    text = pipeline_text(None, data=data, model=case.model, quantize={"variants": ["dynamic"]})
    text = text.replace('[data]\nname = "mnist"\n', "[data]\n")  # the case names its own source
    text = re.sub(r"^root = .*\n", "", text, flags=re.M) if "root" not in data else text
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_there_are_enough_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 15


def assert_fails_in_one_line(case: Case, tmp_path: Path, monkeypatch) -> None:
    """`run` (and `validate` where the case says) on the case's pipeline: exit 2, one
    `error:` line matching the case's message, no file written, none of the user's code run."""
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    pipeline = write_case(case, tmp_path)
    before = files_under(tmp_path)
    runs = [["run", str(pipeline), "--out", str(tmp_path / "run"), "--no-progress"]]
    runs += [["validate", str(pipeline)]] if case.validate else []
    for argv in runs:
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, (argv[0], result.output, result.exception)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv[0], result.stderr)
        assert re.search(case.message, lines[0]), (argv[0], lines[0])
    assert files_under(tmp_path) == before, "a failed command wrote files"
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data(case: Case, tmp_path: Path, monkeypatch):
    assert_fails_in_one_line(case, tmp_path, monkeypatch)
