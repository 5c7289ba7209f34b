"""Published checksums of the known data sets' files: a copy that does not match them is
damaged, re-packed with other content, or another data set under the expected names.

    check_published("mnist", data.files, mode="warn")   # a warning per file that differs
    check_published("mnist", data.files, mode="strict") # a DataError instead

Sources: the MD5 of each `.gz` file as the data set's authors publish it (the lists in
torchvision's dataset classes, e.g. `torchvision.datasets.MNIST.resources`), and for MNIST
and Fashion-MNIST the SHA-256 of the uncompressed files too, so that a copy re-compressed
with another gzip level (as Debian's dataset-fashion-mnist is), or stored uncompressed, is
still recognised by its content; for CIFAR-10/100 and SVHN the MD5 of each file as stored
(torchvision's `train_list`, `test_list`, `meta`, `split_list`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

from compress.errors import DataError

log = logging.getLogger(__name__)

# data set -> file stem -> MD5 of the published .gz file
PUBLISHED_GZ_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "kmnist": {
        "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
    },
}
# data set -> file stem -> SHA-256 of the uncompressed file (the published .gz's content)
PUBLISHED_RAW_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        ),
        "train-labels-idx1-ubyte": (
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        ),
        "t10k-images-idx3-ubyte": (
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        ),
        "t10k-labels-idx1-ubyte": (
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        ),
    },
    # Debian's dataset-fashion-mnist gzips the files again (other .gz bytes, same content)
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
    },
}
# data set -> file name -> MD5 of the published file as it is stored (not compressed): the
# batches of CIFAR's Python version and SVHN's .mat files (torchvision's CIFAR10.train_list,
# test_list and meta, CIFAR100's, SVHN.split_list)
PUBLISHED_FILE_MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    "svhn": {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    },
}
MODES = ("warn", "strict", "off")


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz")


def _digests(path: Path) -> tuple[str | None, str]:
    """(MD5 of the file if it is gzipped, SHA-256 of its uncompressed content)."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return hashlib.md5(data).hexdigest(), hashlib.sha256(gzip.decompress(data)).hexdigest()
    return None, hashlib.sha256(data).hexdigest()


def identify(stem: str, gz_md5: str | None, raw_sha256: str) -> str | None:
    """The known data set whose published file this is, or None."""
    for name, files in PUBLISHED_GZ_MD5.items():
        if gz_md5 is not None and files.get(stem) == gz_md5:
            return name
    for name, files in PUBLISHED_RAW_SHA256.items():
        if files.get(stem) == raw_sha256:
            return name
    return None


def check_published(name: str, files, mode: str = "warn") -> list[str]:
    """Compare each of `files` (paths of data set `name`) with its published checksum;
    returns the problems found (logged as warnings, or a DataError when `mode` is strict)."""
    paths = [Path(f) for f in files]
    if mode == "off":
        return []
    if name in PUBLISHED_GZ_MD5:
        return _report(_check_idx_files(name, paths), mode)
    if name in PUBLISHED_FILE_MD5:
        return _report(_check_plain_files(name, paths), mode)
    return []


def _check_idx_files(name: str, files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        stem = _stem(path)
        if stem not in PUBLISHED_GZ_MD5[name]:
            continue
        gz_md5, raw_sha256 = _digests(path)
        found = identify(stem, gz_md5, raw_sha256)
        if found == name:
            continue
        if found is None and gz_md5 is None and name not in PUBLISHED_RAW_SHA256:
            log.info("%s: %s publishes checksums of the .gz files only; not verified", path, name)
            continue
        if found is not None:
            problems.append(
                f"{path} is {found}'s {stem}, not {name}'s (by its published checksum): "
                f"is [data] name or root wrong?"
            )
        else:
            problems.append(
                f"{path} does not match {name}'s published checksum "
                f"(a damaged or other copy of {stem}, or the same content compressed otherwise)"
            )
    return problems


def _check_plain_files(name: str, files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        if path.name not in PUBLISHED_FILE_MD5[name]:
            continue
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        found = next(
            (
                other
                for other, table in PUBLISHED_FILE_MD5.items()
                if table.get(path.name) == digest
            ),
            None,
        )
        if found == name:
            continue
        if found is not None:
            problems.append(
                f"{path} is {found}'s {path.name}, not {name}'s (by its published checksum): "
                f"is [data] name or root wrong?"
            )
        else:
            problems.append(
                f"{path} does not match {name}'s published checksum (a damaged or other copy)"
            )
    return problems


def _report(problems: list[str], mode: str) -> list[str]:
    if problems and mode == "strict":
        raise DataError(
            "; ".join(problems) + " ([data] verify = 'strict'; 'warn' goes on with a warning)"
        )
    for problem in problems:
        log.warning("%s", problem)
    return problems
