"""Every kind of user mistake gives one `error: ...` line, exit status 2, and writes nothing.

Each case is checked through the CLI: `compress run` (which reads the data) and, for
mistakes in the pipeline or the model, `compress validate` too. The table is the list of
messages the project promises.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_mnist import STEMS, files_under, idx_bytes, tiny_arrays, write_pipeline, write_tiny_mnist

from compress.analysis.tune import tune
from compress.cache import StageCache
from compress.cli import main
from compress.config import parse_pipeline
from compress.errors import CompressError, ConfigError, closest
from compress.files import child_path, sha256_file, write_json
from compress.pipeline import cached_record
from compress.registry import load_user_class

NET_PY = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Small(nn.Module):  # expects 10x10 images
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(100, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Picky(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        raise ValueError("num_classes must be even and greater than 12")
"""


EXITS_PY = "import sys\n\nsys.exit(3)\n"
ARGPARSE_PY = """
import argparse

import torch.nn as nn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, required=True)
args = parser.parse_args()


class Net(nn.Module):
    pass
"""
RAISES_PY = "raise RuntimeError('needs a GPU\\nsee the README')\n"
QUITTER_PY = """
import sys

import torch.nn as nn


class Quitter(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        sys.exit("no config given")
"""
IRIS_CSV = "sepal,petal_length,species\n1.0,2.0,setosa\n3.0,4.0,virginica\n5.0,6.0,setosa\n"


def csv_data(**more) -> dict:
    """[data] for a CSV table t.csv in the pipeline's folder, read with an MLP."""
    return {
        "data": {"name": "csv", "root": None, "train": "t.csv", "label": "species", **more},
        "model": {"name": "logreg", "kwargs": {}},
    }


def images_data(**more) -> dict:
    return {"data": {"name": "imagefolder", "root": "photos", **more}}


class Holder:
    """A custom class: saving an instance makes a file only full unpickling can load."""

    def __init__(self):
        self.weight = torch.zeros(10, 784)


def _save(obj: Callable[[], object]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        torch.save(obj(), path)

    return make


@dataclass
class Case:
    id: str
    message: str  # regex searched in the one line printed
    sections: dict = field(default_factory=dict)  # merged into the tiny pipeline
    text: str | None = None  # the whole pipeline file instead
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)
    data: Callable[[Path], None] | None = None  # damages a copy of the tiny data set
    args: tuple[str, ...] = ()  # more `compress run` arguments ({tmp} is tmp_path)
    validate: bool = True  # a mistake `compress validate` must find too
    pipeline: str = "pipeline.toml"  # written unless text is None and sections is None


def _mutate(role: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / f"{STEMS[role]}.gz"
        path.write_bytes(change(path.read_bytes()))

    return damage


def _replace(
    role: str, array_of: Callable[[np.ndarray], np.ndarray], compress: bool = True
) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        raw = idx_bytes(array_of(tiny_arrays()[role].copy()))
        (root / f"{STEMS[role]}.gz").write_bytes(gzip.compress(raw, mtime=0))

    return damage


def _raw_truncated(root: Path) -> None:
    """An uncompressed images file whose pixels stop early (a partial download)."""
    path = root / f"{STEMS['train-images']}.gz"
    raw = gzip.decompress(path.read_bytes())
    path.unlink()
    (root / STEMS["train-images"]).write_bytes(raw[: len(raw) // 2])


def _labels_as_images(root: Path) -> None:
    shutil.copy(root / f"{STEMS['test-labels']}.gz", root / f"{STEMS['test-images']}.gz")


def _gzip_bad_crc(data: bytes) -> bytes:
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]


def _labels_out_of_range(labels: np.ndarray) -> np.ndarray:
    labels[7] = 12
    return labels


PARTIAL_HINT = r" \(weights_partial = true in \[model\] loads only the tensors that fit\)$"


def user_model(cls: str, **more) -> dict:
    """[model] for class `cls` of a Python file (net.py unless `path` is given)."""
    return {"model": {"name": None, "kwargs": {}, "path": "net.py", "class": cls, **more}}


SYNTAX = "[data]\nname = 'mnist'\n[train]\nepochs = = 3\n"
CASES = [
    # --- the pipeline file itself
    Case(
        "unknown-section",
        r"trian: unknown section; did you mean 'train'\? \(known: .*train",
        {"trian": {"epochs": 1}},
    ),
    Case(
        "unknown-key",
        r"train\.epoch: unknown key; did you mean 'train\.epochs'\?",
        {"train": {"epoch": 3}},
    ),
    Case(
        "unknown-nested-key",
        r"train\.l1\.lamda: unknown key; did you mean 'train\.l1\.lambda'\?",
        {"train": {"l1": {"lamda": 1e-4}}},
    ),
    Case(
        "unknown-key-no-suggestion",
        r"verify\.colour: unknown key \(known: threads, repetitions",
        {"verify": {"colour": "red"}},
    ),
    Case("wrong-type-int", r"train\.epochs: .*\(got '5'\)$", {"train": {"epochs": "5"}}),
    Case("wrong-type-bool", r"prune\.enabled: .*\(got 'yes'\)$", {"prune": {"enabled": "yes"}}),
    Case(
        "wrong-type-list",
        r"quantize\.variants: .*\(got 'dynamic'\)$",
        {"quantize": {"variants": "dynamic"}},
    ),
    Case("wrong-type-section", r"data: .*\(got 5\)$", text="data = 5\n"),
    Case(
        "unknown-choice",
        r"quantize\.variants\.0: .*\(got 'dynamik'\)$",
        {"quantize": {"variants": ["dynamik"]}},
    ),
    Case(
        "ir-version-out-of-range",
        r"export\.ir_version: .*\(got 12\)$",
        {"export": {"ir_version": 12}},
    ),
    Case(
        "prune-amount-too-large",
        r"prune\.amount: .*\(got 1\.5\)$",
        {"prune": {"method": "magnitude", "amount": 1.5, "threshold": None}},
    ),
    Case("negative-lr", r"train\.lr: .*\(got -0\.1\)$", {"train": {"lr": -0.1}}),
    Case("negative-epochs", r"finetune\.epochs: .*\(got -1\)$", {"finetune": {"epochs": -1}}),
    Case("zero-batch-size", r"data\.batch_size: .*\(got 0\)$", {"data": {"batch_size": 0}}),
    Case("opset-out-of-range", r"export\.opset: .*\(got 12\)$", {"export": {"opset": 12}}),
    Case(
        "two-errors-one-line",
        r"train\.lr: .*\(got 0\.0\); train\.momentum: .*\(got 1\.0\)$",
        {"train": {"lr": 0.0, "momentum": 1.0}},
    ),
    Case(
        "unknown-dataset",
        r"data\.name: unknown data source 'cifar' \(did you mean 'cifar10'\?\); known: mnist, "
        r"fashion-mnist, kmnist, cifar10, cifar100, svhn, imagefolder, csv",
        {"data": {"name": "cifar"}},
    ),
    Case(
        "nesterov-without-momentum",
        r"train: nesterov needs optimizer = 'sgd' and momentum > 0",
        {"train": {"nesterov": True, "momentum": 0.0}},
    ),
    Case(
        "gradual-needs-magnitude",
        r"prune: schedule = 'gradual' needs method = .*'magnitude'",
        {"prune": {"schedule": "gradual"}},
    ),
    Case(
        "l1-groups-of-weights-only",
        r"train\.l1: .*groups are made of weights: leave params = 'weights' with groups",
        {"train": {"l1": {"lambda": 1e-3, "groups": "neurons", "params": "all"}}},
    ),
    Case(
        "l1-unknown-group",
        r"train\.l1\.groups",
        {"train": {"l1": {"lambda": 1e-3, "groups": "rows"}}},
    ),
    Case(
        "channels-importance",
        r"prune\.importance",
        {"prune": {"method": "channels", "importance": "taylor"}},
    ),
    Case(
        "override-needs-threshold",
        r"prune: overrides\.net\.1 needs threshold for method = 'threshold'",
        {"prune": {"overrides": {"net.1": {"amount": 0.5}}}},
    ),
    Case(
        "distill-in-train",
        r"train: distill needs a teacher",
        {"train": {"distill": {"alpha": 0.5}}},
    ),
    Case(
        "model-name-and-path",
        r"model: set either name, or path and class, not both",
        {"model": {"path": "net.py", "class": "Net"}},
    ),
    Case(
        "model-path-without-class",
        r"model: path needs class",
        {"model": {"name": None, "path": "net.py"}},
    ),
    Case("toml-syntax", r"pipeline\.toml: TOML syntax error: ", text=SYNTAX),
    Case(
        "toml-duplicate-key",
        r"pipeline\.toml: TOML syntax error: ",
        text="[train]\nepochs = 1\nepochs = 2\n",
    ),
    Case("toml-unclosed-table", r"pipeline\.toml: TOML syntax error: ", text="[train\n"),
    Case(
        "missing-pipeline-file",
        r"pipeline file .*nowhere\.toml does not exist",
        pipeline="nowhere.toml",
        text=None,
        sections=None,
    ),
    Case(
        "pipeline-is-a-folder",
        r"pipeline file .*folder\.toml is a folder, not a TOML file",
        pipeline="folder.toml",
        files={"folder.toml/x": ""},
        sections=None,
    ),
    Case(
        "pipeline-not-text",
        r"binary\.toml is not a UTF-8 text file \(byte 0\)",
        pipeline="binary.toml",
        files={"binary.toml": b"\xff\xfe\x00junk"},
        sections=None,
    ),
    # --- the pipeline's name is its run folder's name: a name, never a path
    Case(
        "name-leaves-runs",
        r"pipeline\.toml: name: '\.\./\.\./etc' is not a plain name \(letters, digits, '\.', "
        r"'_' and '-', starting with a letter or digit, at most 100 characters\): "
        r"it names the run folder",
        text="name = '../../etc'\n",
    ),
    Case("name-absolute", r"name: '/tmp/x' is not a plain name", text="name = '/tmp/x'\n"),
    Case("name-two-parts", r"name: 'a/b' is not a plain name", text="name = 'a/b'\n"),
    Case("name-dot-dot", r"name: '\.\.' is not a plain name", text="name = '..'\n"),
    Case("name-empty", r"name: '' is not a plain name", text="name = ''\n"),
    Case(
        "name-from-file-stem",
        r"the file's name makes the pipeline name '\.\.', which is not a plain name .*: "
        r"rename the file, or set name = \"\.\.\.\" in it",
        pipeline="...toml",
    ),
    Case(
        "name-from-file-stem-with-space",
        r"the file's name makes the pipeline name 'my pipeline'",
        pipeline="my pipeline.toml",
    ),
    # --- the model
    Case(
        "unknown-model",
        r"unknown model 'simplnet' \(did you mean 'simplenet'\?\); known: .*simplenet",
        {"model": {"name": "simplnet"}},
    ),
    Case(
        "model-bad-kwargs",
        r"model 'simplenet' does not accept arguments .*unexpected keyword argument 'hiden'",
        {"model": {"kwargs": {"hiden": 3}}},
    ),
    Case(
        "torchvision-unknown",
        r"unknown torchvision model 'resnet19'; close matches: resnet18",
        {"model": {"name": "torchvision:resnet19", "kwargs": {}}},
    ),
    Case(
        "torchvision-pretrained",
        r"torchvision models are built without pretrained weights",
        {"model": {"name": "torchvision:resnet18", "kwargs": {"weights": "DEFAULT"}}},
    ),
    Case(
        "torchvision-too-small",
        r"the model does not accept mnist images of shape \(2, 1, 28, 28\): RuntimeError",
        {"model": {"name": "torchvision:inception_v3", "kwargs": {}}},
    ),
    Case(
        "resnet20-shortcut",
        r"model resnet20: shortcut must be 'A' \(zero-pad\) or 'B' \(1x1 conv\), got 'C'",
        {"model": {"name": "resnet20", "kwargs": {"shortcut": "C"}}},
    ),
    Case(
        "mlp-hidden",
        r"model mlp: hidden must be a list of positive widths, got \[64, -1\]",
        {"model": {"name": "mlp", "kwargs": {"hidden": [64, -1]}}},
    ),
    Case(
        "model-file-missing",
        r"model file .*nope\.py does not exist",
        user_model("Net", path="nope.py"),
    ),
    Case(
        "model-class-missing",
        r"unknown nn\.Module class in .*net\.py: 'Nett' \(did you mean 'Net'\?\); "
        r"known: Net, Small, Picky",
        user_model("Nett"),
        files={"net.py": NET_PY},
    ),
    Case(
        "model-file-broken",
        r"model file .*broken\.py failed to import: SyntaxError",
        user_model("Net", path="broken.py"),
        files={"broken.py": "class Net(:\n"},
    ),
    Case(
        "model-file-exits",
        r"model file .*exits\.py called sys\.exit\(\) while being imported \(exit status 3\): "
        r"put the script's own code under `if __name__ == \"__main__\":`$",
        user_model("Net", path="exits.py"),
        files={"exits.py": EXITS_PY},
    ),
    Case(
        "model-file-argparse",
        r"model file .*train\.py called sys\.exit\(\) while being imported \(exit status 2; "
        r"it printed 'train\.py: error: the following arguments are required: --epochs'\): "
        r"put the script's own",
        user_model("Net", path="train.py"),
        files={"train.py": ARGPARSE_PY},
    ),
    Case(
        "model-file-raises",
        r"model file .*gpu\.py failed to import: RuntimeError: needs a GPU$",
        user_model("Net", path="gpu.py"),
        files={"gpu.py": RAISES_PY},
    ),
    Case(
        "model-constructor-exits",
        r"building model Quitter from .*quit\.py called sys\.exit\(\) "
        r"\(message 'no config given', exit status 1\)$",
        user_model("Quitter", path="quit.py"),
        files={"quit.py": QUITTER_PY},
    ),
    Case(
        "model-constructor-fails",
        r"building the model failed: ValueError: num_classes must be even",
        user_model("Picky"),
        files={"net.py": NET_PY},
    ),
    Case(
        "model-output-wrong-classes",
        r"the model outputs \(2, 5\) but mnist has 10 classes: "
        r"expected logits of shape \(batch, 10\)",
        {"model": {"kwargs": {"hidden": 16, "num_classes": 5}}},
    ),
    Case(
        "model-input-wrong-shape",
        r"the model does not accept mnist images of shape \(2, 1, 28, 28\): RuntimeError: ",
        user_model("Small"),
        files={"net.py": NET_PY},
    ),
    Case(
        "weights-missing",
        r"model\.weights file .*absent\.pt does not exist",
        {"model": {"weights": "absent.pt"}},
    ),
    # every file the pipeline names is looked for before the data is read
    Case(
        "weights-missing-before-data",
        r"model\.weights file .*absent\.pt does not exist",
        {"model": {"weights": "absent.pt"}},
        data=_mutate("train-images", lambda b: b[: len(b) // 2]),
    ),
    Case(
        "model-file-missing-before-data",
        r"model file .*nope\.py does not exist",
        user_model("Net", path="nope.py"),
        data=_mutate("train-images", lambda b: b[: len(b) // 2]),
    ),
    Case(
        "weights-is-a-folder",
        r"model\.weights file .*saved is a folder, not a file",
        {"model": {"weights": "saved"}},
        files={"saved/model.pt": ""},
    ),
    Case(
        "weights-custom-class",
        r"refusing to load weights file .*weights\.pt: it refers to the Python object \S*Holder, "
        r"which only full unpickling can load, and that could run code",
        user_model("Net", weights="weights.pt"),
        files={"net.py": NET_PY, "weights.pt": _save(Holder)},
    ),
    Case(
        "weights-do-not-fit",
        r"weights file .*weights\.pt does not fit the model: keys 1 missing \(fc\.bias\)"
        + PARTIAL_HINT,
        user_model("Net", weights="weights.pt"),
        files={"net.py": NET_PY, "weights.pt": _save(lambda: {"fc.weight": torch.zeros(3, 3)})},
    ),
    Case(
        "weights-shape-mismatch",
        r"weights file .*weights\.pt does not fit the model: size mismatch for fc\.weight: "
        r"copying a param with shape torch\.Size\(\[3, 3\]\) from checkpoint, "
        r"the shape in current model is torch\.Size\(\[10, 784\]\)\." + PARTIAL_HINT,
        user_model("Net", weights="weights.pt"),
        files={
            "net.py": NET_PY,
            "weights.pt": _save(
                lambda: {"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(10)}
            ),
        },
    ),
    Case(
        "weights-data-parallel-other-model",
        r"weights file .*weights\.pt does not fit the model: "
        r"keys 2 missing \(fc\.bias, fc\.weight\); 2 unexpected \(head\.bias, head\.weight\)"
        + PARTIAL_HINT,
        user_model("Net", weights="weights.pt"),
        files={
            "net.py": NET_PY,
            "weights.pt": _save(
                lambda: {
                    "module.head.weight": torch.zeros(10, 784),
                    "module.head.bias": torch.zeros(10),
                }
            ),
        },
    ),
    Case(
        "weights-partial-nothing-fits",
        r"weights file .*weights\.pt does not fit the model: no tensor has a name and shape of "
        r"the model's \(the model has fc\.bias, fc\.weight; the file head\.weight\)$",
        user_model("Net", weights="weights.pt", weights_partial=True),
        files={"net.py": NET_PY, "weights.pt": _save(lambda: {"head.weight": torch.zeros(3)})},
    ),
    Case(
        "weights-corrupt",
        r"weights file .*weights\.pt is unreadable or corrupt: RuntimeError: ",
        {"model": {"weights": "weights.pt"}},
        files={"weights.pt": b"PK\x03\x04 not really a zip"},
    ),
    Case(
        "weights-not-a-state-dict",
        r"weights file .*weights\.pt does not hold a state_dict \(got list\)",
        {"model": {"weights": "weights.pt"}},
        files={"weights.pt": _save(lambda: [torch.zeros(2)])},
    ),
    Case(
        "prune-unknown-layer",
        r"prune\.layers names \['fc9'\] that are not Linear/Conv layers of the model; "
        r"its layers are: net\.1, net\.3",
        {"prune": {"layers": ["fc9"]}},
    ),
    Case(
        "prune-override-unknown-layer",
        r"prune\.overrides names \['net\.9'\], not among the pruned layers",
        {"prune": {"overrides": {"net.9": {"threshold": 0.1}}}},
    ),
    # --- the command line
    Case(
        "from-unknown-stage",
        r"--from 'trian': not a stage; stages are train, prune",
        args=("--from", "trian"),
        validate=False,
    ),
    # --- the data (only `run` reads it)
    Case(
        "data-root-missing",
        r"data root .*nowhere \(--data-root\) does not exist",
        args=("--data-root", "{tmp}/nowhere"),
        validate=False,
    ),
    Case(
        "data-root-in-file-missing",
        r"data root .*nowhere \(\[data\] root\) does not exist",
        {"data": {"root": "nowhere"}},
    ),
    Case(
        "data-root-is-a-file",
        r"data root .*pipeline\.toml \(\[data\] root\) is not a folder",
        {"data": {"root": "pipeline.toml"}},
    ),
    Case("csv-file-missing", r"CSV file .*t\.csv does not exist", csv_data()),
    Case(
        "csv-test-file-missing",
        r"CSV file .*u\.csv does not exist",
        csv_data(test="u.csv"),
        files={"t.csv": IRIS_CSV},
    ),
    Case(
        "csv-file-is-a-folder",
        r"CSV file .*t\.csv is not a file",
        csv_data(),
        files={"t.csv/x": ""},
    ),
    Case(
        "csv-label-wrong-case",
        r"t\.csv has no label column 'Species'; did you mean 'species'\? "
        r"\(columns: sepal, petal_length, species\)$",
        csv_data(label="Species"),
        files={"t.csv": IRIS_CSV},
    ),
    Case(
        "csv-feature-misspelt",
        r"t\.csv has no column 'petal_lenght' named in \[data\] features; "
        r"did you mean 'petal_length'\? \(columns: ",
        csv_data(features=["sepal", "petal_lenght"]),
        files={"t.csv": IRIS_CSV},
    ),
    Case(
        "image-folder-missing",
        r"data root .*photos \(\[data\] root\) does not exist",
        images_data(),
    ),
    Case(
        "image-folder-without-train",
        r"photos has no train/ folder: expected .*photos/train/<class>/<image>",
        images_data(),
        files={"photos/test/cat/a.png": ""},
    ),
    Case(
        "image-folder-without-root",
        r"\[data\] name = 'imagefolder' needs root",
        images_data(root=None),
    ),
    Case(
        "data-root-option-is-a-file",
        r"data root .*pipeline\.toml \(--data-root\) is not a folder",
        args=("--data-root", "{tmp}/pipeline.toml"),
        validate=False,
    ),
    Case(
        "data-file-missing",
        r"mnist: t10k-labels-idx1-ubyte\[\.gz\] not found "
        r"and download is off \(\[data\] download = false\)\. Put the IDX files in one of: ",
        data=lambda root: (root / f"{STEMS['test-labels']}.gz").unlink(),
        validate=False,
    ),
    Case(
        "data-gzip-truncated",
        r"train-images-idx3-ubyte\.gz is not a valid gzip file \(",
        data=_mutate("train-images", lambda b: b[: len(b) // 2]),
        validate=False,
    ),
    Case(
        "data-gzip-corrupt",
        r"train-labels-idx1-ubyte\.gz is not a valid gzip file \(",
        data=_mutate("train-labels", lambda b: b[:10] + b"\xff" * 64 + b[74:]),
        validate=False,
    ),
    Case(
        "data-gzip-bad-crc",
        r"t10k-images-idx3-ubyte\.gz is not a valid gzip file \(",
        data=_mutate("test-images", _gzip_bad_crc),
        validate=False,
    ),
    Case(
        "data-empty-file",
        r"t10k-labels-idx1-ubyte\.gz is too short to be an IDX file \(0 bytes\)",
        data=_mutate("test-labels", lambda b: gzip.compress(b"", mtime=0)),
        validate=False,
    ),
    Case(
        "data-wrong-magic",
        r"t10k-images-idx3-ubyte\.gz has magic number 0x00000801, "
        r"expected 0x00000803 for an IDX images file",
        data=_labels_as_images,
        validate=False,
    ),
    Case(
        "data-raw-truncated",
        r"train-images-idx3-ubyte is truncated or corrupt: header says \(2000, 28, 28\) "
        r"\(1568000 bytes of data\), file holds 783992",
        data=_raw_truncated,
        validate=False,
    ),
    Case(
        "data-count-mismatch",
        r"train-images-idx3-ubyte\.gz holds 2000 images "
        r"but .*train-labels-idx1-ubyte\.gz holds 1999 labels",
        data=_replace("train-labels", lambda y: y[:1999]),
        validate=False,
    ),
    Case(
        "data-label-out-of-range",
        r"t10k-labels-idx1-ubyte\.gz has label 12, but mnist has 10 classes",
        data=_replace("test-labels", _labels_out_of_range),
        validate=False,
    ),
    Case(
        "data-wrong-image-size",
        r"t10k-images-idx3-ubyte\.gz holds 32x32 images, but mnist images are 28x28",
        data=_replace("test-images", lambda x: np.zeros((len(x), 32, 32), np.uint8)),
        validate=False,
    ),
    Case(
        "data-no-samples",
        r"t10k-labels-idx1-ubyte\.gz holds no samples",
        data=lambda root: write_tiny_mnist(
            root, test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros(0, np.uint8)
        ),
        validate=False,
    ),
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"))


def prepare(case: Case, tmp_path: Path, tiny_root: Path) -> tuple[Path, list[str]]:
    """Write the case's files under tmp_path; return the pipeline path and `run`'s extra
    arguments."""
    data_root = tiny_root
    if case.data is not None:
        data_root = Path(shutil.copytree(tiny_root, tmp_path / "data"))
        case.data(data_root)
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    pipeline = tmp_path / case.pipeline
    if case.text is not None:
        pipeline.write_text(case.text)
    elif case.sections is not None:
        sections = dict(case.sections)
        data = {"root": str(data_root), **sections.get("data", {})}
        write_pipeline(pipeline, None, **{**sections, "data": data})
    return pipeline, [a.format(tmp=tmp_path) for a in case.args]


def commands(case: Case, pipeline: Path, out: Path, extra: list[str]) -> list[list[str]]:
    run = ["run", str(pipeline), "--out", str(out), "--no-progress", *extra]
    return [run, ["validate", str(pipeline)]] if case.validate else [run]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, tiny_root: Path, monkeypatch):
    pipeline, extra = prepare(case, tmp_path, tiny_root)
    monkeypatch.chdir(tmp_path)  # a default ./data or ./runs would land here
    before = files_under(tmp_path)
    for argv in commands(case, pipeline, tmp_path / "run", extra):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, (argv[0], result.output, result.exception)
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        )
        lines = result.stderr.splitlines()
        assert lines[0].startswith("error: ")
        assert len(lines) == 1, (argv[0], result.stderr)
        assert re.search(case.message, lines[0]), (argv[0], lines[0])
        assert result.stdout == ""
    assert files_under(tmp_path) == before, "a failed command wrote files"


@pytest.mark.slow
def test_bad_input_in_a_real_process(tmp_path: Path, tiny_root: Path):
    """The same, as a user sees it: a real process, stderr one line, no traceback."""
    case = next(c for c in CASES if c.id == "data-gzip-corrupt")
    pipeline, extra = prepare(case, tmp_path, tiny_root)
    before = files_under(tmp_path)
    argv = commands(case, pipeline, tmp_path / "run", extra)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "compress", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and re.search(case.message, proc.stderr), proc.stderr
    assert files_under(tmp_path) == before


def test_fixing_the_mistake_makes_validate_pass(tmp_path: Path, tiny_root: Path):
    """The table's pipelines differ from a valid one only by their mistake."""
    pipeline = write_pipeline(tmp_path / "good.toml", tiny_root)
    result = CliRunner().invoke(main, ["validate", str(pipeline)])
    assert result.exit_code == 0, result.output
    assert "good.toml: ok (good: simplenet on mnist)" in result.stdout


# --- names and paths built from settings or records, checked one by one


@pytest.mark.parametrize("name", ["mnist", "lenet5-vd", "run_2", "v1.2", "A", "9lives", "x" * 100])
def test_a_plain_name_is_accepted(name: str):
    assert parse_pipeline({"name": name}, name="p").name == name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/tmp/x",
        "a/b",
        "a\\b",
        ".",
        "..",
        "",
        ".hidden",
        "-rf",
        "a b",
        "caf\u00e9",
        "x" * 101,
        "a\nb",
    ],
)
def test_a_name_that_is_not_one_plain_folder_name_is_refused(name: str):
    with pytest.raises(ConfigError, match=r"^name: .* is not a plain name"):
        parse_pipeline({"name": name}, name="p")


def test_run_without_out_writes_nothing_outside_runs_for_a_name_that_climbs(
    tmp_path: Path, tiny_root: Path, monkeypatch
):
    work = tmp_path / "work"
    pipeline = write_pipeline(work / "p.toml", tiny_root)
    pipeline.write_text('name = "../../escaped"\n' + pipeline.read_text())
    monkeypatch.chdir(work)
    before = files_under(tmp_path)
    result = CliRunner().invoke(main, ["run", str(pipeline), "--no-progress", "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert "is not a plain name" in result.stderr
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "a\\b"])
def test_a_derived_folder_name_must_be_one_component(name: str, tmp_path: Path):
    with pytest.raises(CompressError, match=r"sweep variant .* is not a usable folder name"):
        child_path(tmp_path, name, "sweep variant")


def test_child_path_keeps_sweep_variant_names(tmp_path: Path):
    assert (
        child_path(tmp_path, "variants-dynamic+static", "sweep variant")
        == tmp_path / "variants-dynamic+static"
    )


def test_tune_refuses_a_parameter_whose_point_folders_would_leave_out(
    tmp_path: Path, tiny_root: Path
):
    pipeline = write_pipeline(tmp_path / "p.toml", tiny_root)
    before = files_under(tmp_path)
    with pytest.raises(
        CompressError, match=r"tune point '/tmp/evil-0' is not a usable folder name"
    ):
        tune(pipeline, 1.0, tmp_path / "out", param="model.kwargs./tmp/evil", low=0.0, high=1.0)
    assert files_under(tmp_path) == before


def _record_naming(rel: str) -> dict:
    return {
        "name": "train",
        "key": "k",
        "inputs": {},
        "seconds": 1.0,
        "metrics": {},
        "outputs": {rel: ""},
    }


@pytest.mark.parametrize(
    "rel", ["../outside.pt", "train/../../outside.pt", "{tmp}/elsewhere/outside.pt"]
)
def test_a_stage_record_naming_a_file_outside_its_folder_is_not_used(rel: str, tmp_path: Path):
    """A run folder or cache entry copied from someone else must not make a rerun link or
    copy files outside it."""
    rel = rel.format(tmp=tmp_path)  # an absolute path, under tmp_path all the same
    run_dir, entry = tmp_path / "run", tmp_path / "cache" / "train" / "k"
    for folder in (run_dir, entry):
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"w")  # present and matching: only its place is wrong
        record = _record_naming(rel)
        record["outputs"][rel] = sha256_file(target)
        write_json(folder / ("train/stage.json" if folder is run_dir else "stage.json"), record)
    assert cached_record(run_dir, "train", "k", {}) is None
    assert StageCache(tmp_path / "cache").fetch("train", "k", {}, tmp_path / "other") is None
    assert not (tmp_path / "other").exists()


def test_a_model_file_interrupted_by_ctrl_c_stays_an_interrupt(tmp_path: Path):
    path = tmp_path / "slow.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_user_class(path, "Net")


def test_a_model_file_imports_with_its_own_command_line_and_its_output_shown(
    tmp_path: Path, capsys
):
    path = tmp_path / "net.py"
    path.write_text("import sys\nprint('argv', sys.argv[1:])\n" + NET_PY)
    assert load_user_class(path, "Net").__name__ == "Net"
    assert "argv []" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "known", "meant"),
    [
        ("Species", ["sepal", "species"], "species"),
        ("petal_lenght", ["sepal", "petal_length"], "petal_length"),
        ("colour", ["threads", "repetitions"], None),
    ],
)
def test_did_you_mean_prefers_a_name_that_differs_only_in_case(name, known, meant):
    assert closest(name, known) == meant
