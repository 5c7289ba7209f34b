"""The data sources: image folders (and their cache), CSV tables, CIFAR batches; the registry."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import table_rows, write_cifar10, write_csv, write_image, write_image_folder

from compress.config import parse_pipeline
from compress.data import list_sources, load_data, peek_data
from compress.data.csv_table import class_names
from compress.errors import DataError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))


def data_config(**data):
    return parse_pipeline({"data": data}, name="p").data


def test_every_source_is_registered_by_name():
    assert set(list_sources()) == {
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
    }


def test_an_image_folder_with_train_and_test(tmp_path):
    root = write_image_folder(
        tmp_path / "photos", {"cat": 20, "dog": 20}, test={"cat": 5, "dog": 5}
    )
    data = load_data(data_config(name="imagefolder", root=str(root)))
    assert data.classes == ("cat", "dog") and data.kind == "image" and data.feature_names is None
    assert data.size("train") == 36 and data.size("val") == 4 and data.size("test") == 10
    assert data.images["train"].dtype == torch.uint8 and data.input_shape == (3, 8, 8)
    pre = data.preprocessing
    assert (
        pre["size"] == [8, 8]
        and pre["channels"] == 3
        and pre["layout"] == "NCHW"
        and len(pre["mean"]) == 3
    )
    x = data.images["train"].double() / 255  # mean and std per channel of the training part
    assert pre["mean"] == pytest.approx(x.mean((0, 2, 3)).tolist())
    assert pre["std"] == pytest.approx(x.std((0, 2, 3), correction=0).tolist())
    assert json.dumps(pre)  # JSON-ready for the ONNX metadata


def test_without_test_folder_test_fraction_splits_a_stratified_part(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 20, "b": 10})
    data = load_data(data_config(name="imagefolder", root=str(root), test_fraction=0.2))
    assert torch.bincount(data.labels["test"]).tolist() == [4, 2]
    assert data.size("train") + data.size("val") + data.size("test") == 30


def test_image_size_and_channels_resize_and_convert(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 5, "b": 5}, size=(10, 12))
    data = load_data(data_config(name="imagefolder", root=str(root), image_size=[6, 4], channels=1))
    assert data.input_shape == (1, 6, 4)
    assert peek_data(data_config(name="imagefolder", root=str(root), channels=1)) == (
        (1, 10, 12),
        2,
    )


def test_the_second_load_reads_the_cache_and_a_changed_file_invalidates_it(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 6, "b": 6})
    config = data_config(name="imagefolder", root=str(root))
    first = load_data(config)
    cached = list((tmp_path / "cache").glob("imagefolder-*.pt"))
    assert len(cached) == 1
    again = load_data(config)
    assert (
        torch.equal(again.images["train"], first.images["train"])
        and again.fingerprint == first.fingerprint
    )
    write_image(
        root / "train" / "a" / "000.png", np.zeros((8, 8, 3), np.uint8)
    )  # same name and size
    changed = load_data(config)
    assert changed.fingerprint != first.fingerprint
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 2


def test_a_csv_table_with_text_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x1", "x2", "x3", "diagnosis"], table_rows(100))
    data = load_data(data_config(name="csv", train=str(path), label="diagnosis", test_fraction=0.2))
    assert data.kind == "table" and data.classes == ("benign", "malignant")
    assert data.feature_names == ("x1", "x2", "x3") and data.input_shape == (3,)
    assert data.size("test") == 20 and data.size("val") == 8 and data.size("train") == 72
    x, _ = data.tensors("train")  # standardized with the training part's mean and std
    assert x.mean(0).abs().max() < 1e-5 and (x.std(0, correction=0) - 1).abs().max() < 1e-4
    pre = data.preprocessing
    assert set(pre) == {"features", "mean", "std"} and pre["features"] == ["x1", "x2", "x3"]
    raw = data.images["test"].numpy()
    expected = (raw - np.float32(pre["mean"])) / np.float32(pre["std"])
    np.testing.assert_allclose(data.tensors("test")[0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_csv_features_choose_columns_and_a_test_file(tmp_path):
    rows = table_rows(60, labels=("3", "10"))
    train = write_csv(tmp_path / "train.csv", ["x1", "x2", "x3", "y"], rows[:40])
    test = write_csv(tmp_path / "test.csv", ["x1", "x2", "x3", "y"], rows[40:])
    data = load_data(
        data_config(
            name="csv", train="train.csv", test="test.csv", label="y", features=["x3", "x1"]
        ),
        base_dir=tmp_path,
    )
    assert data.feature_names == ("x3", "x1") and data.size("test") == 20
    assert data.classes == ("3", "10")  # integer labels sort as numbers
    assert data.files.keys() == {str(train), str(test)}


def test_a_csv_table_is_named_by_its_file_and_folder(tmp_path):
    path = write_csv(tmp_path / "wine" / "train.csv", ["x1", "x2", "x3", "y"], table_rows(40))
    data = load_data(data_config(name="csv", train=str(path), label="y"))
    assert data.name == "wine/train.csv"  # "train", the stem alone, would not say which table


def test_class_names_sort_integers_as_numbers_and_text_as_text():
    assert class_names(["10", "2", "2"]) == ["2", "10"]
    assert class_names(["b", "a"]) == ["a", "b"]


def test_cifar10_from_its_python_batches(tmp_path):
    root = write_cifar10(tmp_path / "data", n_train=100, n_test=20)
    data = load_data(data_config(name="cifar10", root=str(root), download=False))
    assert (
        data.classes[0] == "airplane" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    )
    assert data.size("train") + data.size("val") == 100 and data.size("test") == 20
    batch = pickle.loads((root / "cifar-10-batches-py" / "test_batch").read_bytes())
    np.testing.assert_array_equal(data.images["test"].reshape(20, -1).numpy(), batch[b"data"])


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    root = write_cifar10(tmp_path / "data")
    marker = tmp_path / "code-ran"

    class Touch:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({b"data": Touch(), b"labels": []})
    )
    with pytest.raises(
        DataError, match="refusing to read .*data_batch_1: refers to the Python object io.open"
    ):
        load_data(data_config(name="cifar10", root=str(root), download=False))
    assert not marker.exists()


def test_a_failed_download_gives_its_cause_and_leaves_nothing(tmp_path, monkeypatch):
    import torchvision.datasets

    class Unreachable:  # writes part of an archive, then loses the network
        def __init__(self, root, train=True, download=False):
            (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
            raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Unreachable)
    root = tmp_path / "fresh"
    with pytest.raises(
        DataError, match=r"cifar10: download failed \(\[Errno 101\] Network is unreachable\)"
    ):
        load_data(data_config(name="cifar10", root=str(root), download=True))
    assert not root.exists()
    existing = tmp_path / "existing"
    (existing / "notes.txt").parent.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="download failed"):
        load_data(data_config(name="cifar10", root=str(existing), download=True))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_cifar100_uses_the_fine_labels(tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("test", 10)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"fine_labels": [i % 3 for i in range(n)],
            b"coarse_labels": [0] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(
        pickle.dumps({b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20})
    )
    data = load_data(data_config(name="cifar100", root=str(tmp_path / "data"), download=False))
    assert data.num_classes == 100 and data.classes[2] == "class2" and data.size("test") == 10


def test_svhn_from_its_mat_files_with_label_10_as_digit_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = np.array([[10 if i % 10 == 0 else i % 10] for i in range(n)], dtype=np.uint8)
        scipy_io.savemat(tmp_path / name, {"X": x, "y": y})
    data = load_data(data_config(name="svhn", root=str(tmp_path), download=False))
    assert data.input_shape == (3, 32, 32) and data.classes == tuple(str(i) for i in range(10))
    assert data.labels["test"].tolist() == list(range(10))
    x = scipy_io.loadmat(tmp_path / "test_32x32.mat")["X"]
    np.testing.assert_array_equal(data.images["test"][3].numpy(), x[..., 3].transpose(2, 0, 1))


def test_kmnist_is_found_in_torchvisions_folder_layout(tmp_path, mnist_arrays, idx_writer):
    raw = tmp_path / "KMNIST" / "raw"
    for stem, array in mnist_arrays.items():
        idx_writer(raw / f"{stem}.gz", array)
    data = load_data(data_config(name="kmnist", root=str(tmp_path), download=False))
    assert data.classes[:3] == ("o", "ki", "su") and data.input_shape == (1, 28, 28)


def test_data_root_is_the_folder_of_named_data_sets_not_of_a_pipelines_own_files(tmp_path):
    """`make run` passes --data-root for MNIST; a CSV or image-folder pipeline keeps its files."""
    from compress.data import data_root

    shared = tmp_path / "shared"
    csv = parse_pipeline({"data": {"name": "csv", "train": "t.csv", "label": "y"}}, name="p").data
    assert data_root(csv, tmp_path / "pipelines", shared) == tmp_path / "pipelines"
    folder = parse_pipeline({"data": {"name": "imagefolder", "root": "images"}}, name="p").data
    assert data_root(folder, tmp_path / "pipelines", shared) == tmp_path / "pipelines" / "images"
    unnamed = parse_pipeline({"data": {"name": "imagefolder"}}, name="p").data
    assert data_root(unnamed, tmp_path / "pipelines", shared) == shared
    mnist = parse_pipeline({"data": {"name": "mnist", "root": "mine"}}, name="p").data
    assert data_root(mnist, tmp_path / "pipelines", shared) == shared
