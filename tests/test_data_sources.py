"""Data sources by name: every registered source keeps the same contract on tiny files of its
own format (splits disjoint, a fingerprint that follows the files, preprocessing metadata
of the input's shape, labels within the classes), and a new source is one class (here,
`Npz` below) plus one registry line."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from data_files import (
    table_rows,
    write_audio_folder,
    write_cifar10,
    write_csv,
    write_image_folder,
)
from tiny_mnist import pipeline_text, write_tiny_mnist

from compress.config import DataCommon, load_pipeline, parse_pipeline
from compress.data import (
    Dataset,
    DataSource,
    check_files,
    get_source,
    list_sources,
    load_data,
    peek_data,
    register_source,
    registry,
)
from compress.data.base import own_root
from compress.data.split import split_dataset
from compress.errors import CompressError, ConfigError
from compress.files import sha256_file
from compress.pipeline import run_pipeline


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))


# --- tiny files for every source: writer(root, edit) -> ([data] section, samples written).
# `edit` 1 writes other contents in the same files. No two samples written are equal, so a
# sample found in two splits was put in both.
def idx_files(name: str) -> Callable[[Path, int], tuple[dict, int]]:
    def write(root: Path, edit: int) -> tuple[dict, int]:
        write_tiny_mnist(root, n_train=300 + 20 * edit, n_test=100)
        return {
            "name": name,
            "root": str(root),
            "download": False,
            "verify": "off",
        }, 400 + 20 * edit

    return write


def cifar10_files(root: Path, edit: int) -> tuple[dict, int]:
    write_cifar10(root, n_train=50 + 10 * edit, n_test=20)
    return {"name": "cifar10", "root": str(root), "download": False}, 70 + 10 * edit


def cifar100_files(root: Path, edit: int) -> tuple[dict, int]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(edit)
    for name, n in (("train", 30), ("test", 10)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"fine_labels": [i % 3 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    return {"name": "cifar100", "root": str(root), "download": False}, 40


def svhn_files(root: Path, edit: int) -> tuple[dict, int]:
    scipy_io = pytest.importorskip("scipy.io")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(edit)
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        y = np.array([[10 if i % 10 == 0 else i % 10] for i in range(n)], dtype=np.uint8)
        scipy_io.savemat(
            root / name, {"X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8), "y": y}
        )
    return {"name": "svhn", "root": str(root), "download": False}, 50


def imagefolder_files(root: Path, edit: int) -> tuple[dict, int]:
    write_image_folder(root, {"cat": 10 + edit, "dog": 10}, test={"cat": 4, "dog": 4})
    return {"name": "imagefolder", "root": str(root)}, 28 + edit


def csv_files(root: Path, edit: int) -> tuple[dict, int]:
    write_csv(root / "t.csv", ["x1", "x2", "x3", "y"], table_rows(60, seed=edit))
    return {"name": "csv", "root": str(root), "train": "t.csv", "label": "y"}, 60


def arrays_files(root: Path, edit: int) -> tuple[dict, int]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(edit)
    np.save(root / "x.npy", rng.normal(size=(50, 8, 3)).astype(np.float32))
    np.save(root / "y.npy", np.array(["a", "b"] * 25))
    return {"name": "arrays", "root": str(root), "train": ["x.npy", "y.npy"]}, 50


def audiofolder_files(root: Path, edit: int) -> tuple[dict, int]:
    write_audio_folder(root, {"low": 8, "high": 8}, test={"low": 3, "high": 3}, edit=edit)
    return {"name": "audiofolder", "root": str(root), "clip_seconds": 0.25}, 22


WRITERS = {
    "mnist": idx_files("mnist"),
    "fashion-mnist": idx_files("fashion-mnist"),
    "kmnist": idx_files("kmnist"),
    "cifar10": cifar10_files,
    "cifar100": cifar100_files,
    "svhn": svhn_files,
    "imagefolder": imagefolder_files,
    "csv": csv_files,
    "arrays": arrays_files,
    "audiofolder": audiofolder_files,
}
SOURCES = list(list_sources())


def tiny(name: str, root: Path, edit: int = 0) -> tuple[DataCommon, int]:
    assert name in WRITERS, f"data source {name!r} has no tiny-file writer: add one to WRITERS"
    section, samples = WRITERS[name](root, edit)
    return parse_pipeline({"data": section}, name="p").data, samples


def sample_keys(x: torch.Tensor) -> set[bytes]:
    return {hashlib.sha256(row.numpy().tobytes()).digest() for row in x[:]}


def test_the_builtin_sources_are_registered_in_their_order():
    assert SOURCES == [
        "mnist",
        "fashion-mnist",
        "kmnist",
        "cifar10",
        "cifar100",
        "svhn",
        "imagefolder",
        "csv",
        "arrays",
        "audiofolder",
    ]
    assert (
        get_source("kmnist") is get_source("mnist")
        and get_source("csv").Config.__name__ == "CsvDataConfig"
    )


def test_an_unknown_source_lists_the_known_ones():
    with pytest.raises(
        CompressError,
        match=r"unknown data source 'imagefolders' \(did you mean 'imagefolder'\?\); "
        r"known: mnist, fashion-mnist, kmnist, cifar10",
    ):
        get_source("imagefolders")
    with pytest.raises(
        ConfigError, match=r"^data\.name: unknown data source 'cvs' \(did you mean 'csv'\?\)"
    ):
        parse_pipeline({"data": {"name": "cvs"}}, name="p")


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_reads_its_section_and_refuses_unknown_keys(name, tmp_path):
    config, _ = tiny(name, tmp_path / "data")
    assert isinstance(config, get_source(name).Config) and config.name == name
    section = WRITERS[name](tmp_path / "data", 0)[0]
    with pytest.raises(
        ConfigError, match=r"^data\.colour: unknown key.* \(known: root, download, batch_size"
    ):
        parse_pipeline({"data": {**section, "colour": "red"}}, name="p")


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_gives_three_disjoint_splits_of_what_it_read(name, tmp_path):
    config, samples = tiny(name, tmp_path / "data")
    check_files(config, tmp_path)
    data = load_data(config, tmp_path)
    sizes = {split: data.size(split) for split in ("train", "val", "test")}
    assert all(sizes.values()) and sum(sizes.values()) == samples, sizes
    keys = {split: sample_keys(data.images[split]) for split in sizes}
    assert (
        not keys["train"] & keys["val"]
        and not keys["train"] & keys["test"]
        and not keys["val"] & keys["test"]
    )
    again = load_data(config, tmp_path)  # seeded: the same splits every time
    assert all(
        torch.equal(again.images[s][:], data.images[s][:])
        and torch.equal(again.labels[s], data.labels[s])
        for s in sizes
    )


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_fingerprints_its_files_and_a_changed_file_changes_it(name, tmp_path):
    config, _ = tiny(name, tmp_path / "data")
    data = load_data(config, tmp_path)
    assert data.files and all(data.files.values()) and data.fingerprint
    assert load_data(config, tmp_path).fingerprint == data.fingerprint
    tiny(name, tmp_path / "data", edit=1)  # other contents in the same files
    assert load_data(config, tmp_path).fingerprint != data.fingerprint


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_describes_its_inputs_and_labels(name, tmp_path):
    config, _ = tiny(name, tmp_path / "data")
    data = load_data(config, tmp_path)
    pre = data.preprocessing
    assert json.dumps(pre)  # JSON-ready for the ONNX metadata
    if data.kind == "audio":  # waveforms in, the features computed in the artifact's graph
        features = pre["features"]
        assert data.artifact_shape == (pre["clip_samples"],) and pre["sample_rate"] > 0
        assert data.input_shape == (1, features["frames"], features["n_mfcc"])
        assert all(x.dtype == torch.float32 and x.abs().max() <= 1 for x in data.images.values())
        assert data.normalize(data.images["val"]).shape[1:] == data.input_shape
        assert peek_data(config, tmp_path) == (data.input_shape, data.num_classes)
        return
    width = data.input_shape[0]  # channels or features
    if data.kind == "array":  # mean and std broadcast against one sample
        shape = data.input_shape
        assert np.broadcast_shapes(np.shape(pre["mean"]), np.shape(pre["std"]), shape) == shape
        assert pre["input_shape"] == list(shape) and np.all(np.asarray(pre["std"]) > 0)
    else:
        assert len(pre["mean"]) == len(pre["std"]) == width and all(s > 0 for s in pre["std"])
    if data.kind == "image":
        assert (
            pre["channels"] == width
            and pre["size"] == list(data.input_shape[1:])
            and pre["layout"] == "NCHW"
        )
        assert all(x.dtype == torch.uint8 for x in data.images.values())
    elif data.kind == "table":
        assert (
            data.kind == "table"
            and pre["features"] == list(data.feature_names)
            and len(data.input_shape) == 1
        )
    assert len(set(data.classes)) == data.num_classes >= 2 and all(
        isinstance(c, str) for c in data.classes
    )
    for y in data.labels.values():
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < data.num_classes
    assert peek_data(config, tmp_path) in (None, (data.input_shape, data.num_classes))


# --- a new source: this section and class, and one registry line (in the fixture below)
class NpzDataConfig(DataCommon):
    name: Literal["npz"]
    file: str = "data.npz"  # x [N, F] float32, y [N] int64, in [data] root


class Npz(DataSource):
    names = ("npz",)
    Config = NpzDataConfig

    def load(self, config, root):
        path = root / config.file
        with np.load(path) as arrays:
            images, labels = (
                {"train": torch.from_numpy(arrays["x"])},
                {"train": torch.from_numpy(arrays["y"])},
            )
        split_dataset(images, labels, config.validation, config.seed)
        x = images["train"].double()
        return Dataset(
            "npz",
            images,
            labels,
            classes=("a", "b"),
            mean=tuple(x.mean(0).tolist()),
            std=tuple(x.std(0).tolist()),
            files={str(path): sha256_file(path)},
            kind="table",
            feature_names=("f0", "f1"),
            settings={"validation": config.validation, "seed": config.seed},
        )


@pytest.fixture
def npz_source(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(list_sources()))  # undone after the test
    register_source(Npz)  # the one registry line
    return Npz


def write_npz(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = np.stack([y * 3 + rng.normal(size=n), rng.normal(size=n)], axis=1).astype(np.float32)
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def test_registering_a_name_twice_or_one_its_section_lacks_is_refused(npz_source):
    class Other(Npz):
        pass

    with pytest.raises(ValueError, match="'npz' is registered twice"):
        register_source(Other)

    class Mislabelled(DataSource):
        names = ("npy",)
        Config = NpzDataConfig

    with pytest.raises(ValueError, match=r"'npy': its Config needs name: Literal\['npy', \.\.\.\]"):
        register_source(Mislabelled)


def test_a_new_source_is_usable_from_a_pipeline_once_registered(npz_source, tmp_path):
    write_npz(tmp_path / "data.npz")
    assert "npz" in list_sources() and list(list_sources())[-1] == "npz"
    with pytest.raises(ConfigError, match=r"data\.fiel: unknown key; did you mean 'data\.file'\?"):
        parse_pipeline({"data": {"name": "npz", "fiel": "x.npz"}}, name="p")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        pipeline_text(
            None,
            data={"name": "npz", "root": ".", "batch_size": 20},
            model={"name": "logreg", "kwargs": None},
            train={"epochs": 3, "lr": 0.1, "momentum": 0.5, "l1": None},
            prune={"threshold": 0.01},
        )
    )
    config = load_pipeline(pipeline)
    assert own_root(config.data, config.base_dir) == tmp_path / "."
    report = run_pipeline(config, tmp_path / "run", progress=False)
    assert report["dataset"]["name"] == "npz" and report["dataset"]["kind"] == "table"
    assert (
        report["dataset"]["train_samples"]
        + report["dataset"]["val_samples"]
        + report["dataset"]["test_samples"]
        == 200
    )
    rows = {a["name"]: a for a in report["artifacts"]}
    assert rows["pruned"]["status"] == "ok" and rows["pruned"]["accuracy"] > 0.8
