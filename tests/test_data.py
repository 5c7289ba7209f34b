"""IDX reading and the in-memory data set: gzipped and raw files, both folder layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from compress.data import (
    DATASETS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    SPLIT_FILES,
    load_dataset,
    read_idx,
)
from compress.errors import DataError

TRAIN_IMAGES, TRAIN_LABELS = SPLIT_FILES["train"]
TEST_IMAGES, TEST_LABELS = SPLIT_FILES["test"]
TRAIN_SAMPLES, TEST_SAMPLES = 2000, 500  # the slice conftest.py cuts from real MNIST


def write_split_files(folder, arrays, idx_writer, gz: bool) -> None:
    for stem, array in arrays.items():
        idx_writer(folder / (f"{stem}.gz" if gz else stem), array, gz=gz)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_read_idx_returns_the_images_with_their_header_shape(
    tmp_path, mnist_arrays, idx_writer, gz
):
    images = mnist_arrays[TRAIN_IMAGES][:10]
    path = idx_writer(tmp_path / "images", images, gz=gz)
    array = read_idx(path, IDX_IMAGES_MAGIC)
    assert array.dtype == np.uint8 and array.shape == (10, 28, 28)
    np.testing.assert_array_equal(array, images)


def test_read_idx_reads_labels(tmp_path, idx_writer):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    array = read_idx(idx_writer(tmp_path / "labels.gz", labels), IDX_LABELS_MAGIC)
    assert array.shape == (5,)
    assert array.tolist() == [7, 2, 1, 0, 4]


def test_read_idx_checks_the_magic_number(tmp_path, idx_writer):
    path = idx_writer(tmp_path / "labels.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_the_real_mnist_slice_has_the_expected_content(tiny_data):
    assert tiny_data.size("train") + tiny_data.size("val") == TRAIN_SAMPLES
    assert tiny_data.size("test") == TEST_SAMPLES
    # The first test image of real MNIST is a 7.
    assert tiny_data.labels["test"][0].item() == 7
    assert set(tiny_data.labels["train"].tolist()) == set(range(10))


def test_the_validation_split_is_a_seeded_stratified_tenth_of_the_training_files(
    tiny_data, mnist_root, mnist_arrays
):
    assert tiny_data.size("val") == pytest.approx(TRAIN_SAMPLES * 0.1, abs=10)
    all_labels = torch.from_numpy(mnist_arrays[TRAIN_LABELS].astype(np.int64))
    counts = torch.bincount(all_labels, minlength=10).float()
    val_counts = torch.bincount(tiny_data.labels["val"], minlength=10).float()
    assert torch.all((val_counts - 0.1 * counts).abs() <= 1)  # every class gives its share
    # train and val partition the training files: together they hold every training image once
    together = torch.cat([tiny_data.images["train"], tiny_data.images["val"]]).flatten(1)
    assert len(torch.unique(together, dim=0)) == len(
        torch.unique(torch.from_numpy(mnist_arrays[TRAIN_IMAGES]).flatten(1), dim=0)
    )
    again = load_dataset("mnist", mnist_root, download=False)
    assert torch.equal(again.labels["val"], tiny_data.labels["val"])
    other = load_dataset("mnist", mnist_root, download=False, seed=1)
    assert not torch.equal(other.images["val"], tiny_data.images["val"])
    assert load_dataset("mnist", mnist_root, download=False, validation=0.2).size(
        "val"
    ) == pytest.approx(400, abs=10)


@pytest.mark.parametrize(
    ("layout", "gz"),
    [("", True), ("", False), ("MNIST/raw", True), ("MNIST/raw", False), ("mnist", True)],
    ids=["flat-gz", "flat-raw", "torchvision-gz", "torchvision-raw", "mnist-folder-gz"],
)
def test_load_dataset_finds_the_files_in_every_supported_layout(
    tmp_path, mnist_arrays, idx_writer, layout, gz
):
    write_split_files(tmp_path / layout if layout else tmp_path, mnist_arrays, idx_writer, gz)
    data = load_dataset("mnist", tmp_path, download=False, validation=0.0)
    assert data.images["train"].shape == (TRAIN_SAMPLES, 1, 28, 28)
    assert data.images["test"].shape == (TEST_SAMPLES, 1, 28, 28)
    assert data.images["train"].dtype == torch.uint8
    assert data.labels["train"].dtype == torch.int64
    np.testing.assert_array_equal(data.images["test"][:, 0].numpy(), mnist_arrays[TEST_IMAGES])
    np.testing.assert_array_equal(data.labels["train"].numpy(), mnist_arrays[TRAIN_LABELS])
    assert len(data.files) == 4
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10


def test_missing_files_without_download_fail_at_once_naming_them(
    tmp_path, mnist_arrays, idx_writer
):
    idx_writer(tmp_path / f"{TRAIN_IMAGES}.gz", mnist_arrays[TRAIN_IMAGES])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "download is off" in message


def test_an_unknown_data_set_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="known: mnist, fashion-mnist"):
        load_dataset("cifar", tmp_path, download=False)


def test_preprocessing_metadata_describes_normalize(tiny_data):
    pre = tiny_data.preprocessing
    assert pre == {
        "scale": 1 / 255,
        "mean": [DATASETS["mnist"].mean],
        "std": [DATASETS["mnist"].std],
        "size": [28, 28],
        "channels": 1,
        "layout": "NCHW",
    }
    pixels = tiny_data.images["test"][:16]
    expected = (pixels.float() * pre["scale"] - pre["mean"][0]) / pre["std"][0]
    torch.testing.assert_close(tiny_data.normalize(pixels), expected, rtol=0, atol=1e-6)


def test_tensors_normalizes_the_first_samples_of_a_split(tiny_data):
    x, y = tiny_data.tensors("test", limit=5)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, tiny_data.normalize(tiny_data.images["test"][:5]))
    assert y.tolist() == tiny_data.labels["test"][:5].tolist()


def test_batches_cover_every_sample_once_per_epoch(tiny_data):
    indices = list(tiny_data.index_batches("train", 64, torch.Generator().manual_seed(1)))
    assert [len(i) for i in indices[:-1]] == [64] * (len(indices) - 1)
    n = tiny_data.size("train")
    assert len(indices[-1]) == n - 64 * (len(indices) - 1)
    assert sorted(torch.cat(indices).tolist()) == list(range(n))


def test_batches_are_shuffled_reproducibly_by_the_generator(tiny_data):
    def order(seed):
        return torch.cat(
            list(tiny_data.index_batches("train", 100, torch.Generator().manual_seed(seed)))
        )

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    unshuffled = torch.cat(list(tiny_data.index_batches("test", 100, shuffle=False)))
    assert unshuffled.tolist() == list(range(TEST_SAMPLES))


def test_batches_yield_normalized_images_with_their_labels(tiny_data):
    x, y = next(tiny_data.batches("test", 8, shuffle=False))
    torch.testing.assert_close(x, tiny_data.tensors("test", limit=8)[0])
    assert torch.equal(y, tiny_data.labels["test"][:8])


def test_the_fingerprint_depends_on_file_content_not_location(
    tmp_path, mnist_root, tiny_data, mnist_arrays, idx_writer
):
    copy = tmp_path / "copy" / "MNIST" / "raw"
    copy.mkdir(parents=True)
    for path in mnist_root.iterdir():
        shutil.copy(path, copy / path.name)
    assert (
        load_dataset("mnist", tmp_path / "copy", download=False).fingerprint
        == tiny_data.fingerprint
    )

    changed = tmp_path / "changed"
    arrays = dict(mnist_arrays)
    arrays[TEST_LABELS] = arrays[TEST_LABELS][::-1].copy()
    write_split_files(changed, arrays, idx_writer, gz=True)
    assert load_dataset("mnist", changed, download=False).fingerprint != tiny_data.fingerprint
