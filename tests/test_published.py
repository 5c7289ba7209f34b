"""Known data sets are checked against their published checksums: a copy that differs is a
warning naming the file (an error with [data] verify = "strict"), and another data set's
files under the expected names are named for what they are."""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.config import parse_pipeline
from compress.data import load_data, published
from compress.errors import DataError

STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def data_config(root, verify="warn", name="mnist"):
    return parse_pipeline(
        {"data": {"name": name, "root": str(root), "download": False, "verify": verify}}, name="p"
    ).data


REAL_LABELS = Path(__file__).resolve().parent / "data" / "mnist-labels"  # MNIST's own label files


def test_the_real_mnist_files_match_though_recompressed():
    files = sorted(REAL_LABELS.glob("*-labels-idx1-ubyte.gz"))
    assert [f.name for f in files] == ["t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # these .gz files are not the published ones byte for byte; their content is
    for f in files:
        assert md5(f) != published.PUBLISHED_GZ_MD5["mnist"][f.name.removesuffix(".gz")]
    assert published.check_published("mnist", files, "strict") == []


def test_an_mnist_pipeline_on_recompressed_fashion_mnist_files_is_an_error_when_strict(
    mnist_root, monkeypatch, tmp_path
):
    # Debian's way: the same content gzipped again, so only the uncompressed checksum matches.
    # The tiny files stand for Fashion-MNIST's: their content's checksums are what it publishes.
    root = tmp_path / "fashion"
    root.mkdir()
    for stem in STEMS:
        raw = gzip.decompress((mnist_root / f"{stem}.gz").read_bytes())
        (root / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=1))
        monkeypatch.setitem(
            published.PUBLISHED_RAW_SHA256["fashion-mnist"], stem, hashlib.sha256(raw).hexdigest()
        )
        monkeypatch.setitem(published.PUBLISHED_RAW_SHA256["mnist"], stem, "0" * 64)
    with pytest.raises(
        DataError,
        match=rf"{root / STEMS[0]}\.gz is fashion-mnist's {STEMS[0]}, "
        r"not mnist's .*is \[data\] name or root wrong\?",
    ):
        load_data(data_config(root, verify="strict"))
    load_data(data_config(root, verify="strict", name="fashion-mnist"))


def test_a_copy_that_differs_is_a_warning_naming_each_file(mnist_root, caplog):
    with caplog.at_level(logging.WARNING):
        load_data(data_config(mnist_root))
    for stem in STEMS:  # the tiny slice is not the published file
        assert f"{mnist_root / stem}.gz does not match mnist's published checksum" in caplog.text


def test_strict_makes_it_an_error(mnist_root):
    with pytest.raises(
        DataError, match=r"does not match mnist's published checksum.*verify = 'strict'"
    ):
        load_data(data_config(mnist_root, verify="strict"))
    load_data(data_config(mnist_root, verify="off"))  # off: not even looked at


def test_an_mnist_pipeline_on_fashion_mnist_files_warns(mnist_root, monkeypatch, caplog):
    # The tiny files stand for Fashion-MNIST's: their checksums are what it publishes.
    fake = {stem: md5(mnist_root / f"{stem}.gz") for stem in STEMS}
    monkeypatch.setitem(published.PUBLISHED_GZ_MD5, "fashion-mnist", fake)
    with caplog.at_level(logging.WARNING):
        load_data(data_config(mnist_root))
    assert f"{mnist_root / STEMS[0]}.gz is fashion-mnist's {STEMS[0]}, not mnist's" in caplog.text
    assert "[data] name" in caplog.text


def test_strict_on_the_wrong_data_set_is_one_error_line(
    mnist_root, pipeline_file, monkeypatch, tmp_path
):
    fake = {stem: md5(mnist_root / f"{stem}.gz") for stem in STEMS}
    monkeypatch.setitem(published.PUBLISHED_GZ_MD5, "fashion-mnist", fake)
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(pipeline_file({"data.verify": "strict"})),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "fashion-mnist's" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_cifar_files_are_checked_by_name_and_content(tmp_path, monkeypatch, caplog):
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(b"not the published batch")
    with caplog.at_level(logging.WARNING):
        assert published.check_published("cifar10", [batch], "warn")
    assert f"{batch} does not match cifar10's published checksum" in caplog.text
    monkeypatch.setitem(published.PUBLISHED_FILE_MD5["cifar10"], "data_batch_1", md5(batch))
    assert published.check_published("cifar10", [batch], "strict") == []
    assert (
        published.check_published("csv", [batch], "strict") == []
    )  # nothing published: not checked
