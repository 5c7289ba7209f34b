"""Tiny data files in every format the data sources read, written under a test's tmp_path.

root = write_image_folder(tmp_path / "photos", classes={"cat": 6, "dog": 6})
path = write_csv(tmp_path / "t.csv", header=["a", "b", "y"], rows=[[1, 2, "x"], ...])
root = write_cifar10(tmp_path / "data", n_train=40, n_test=20)
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np


def image_array(
    seed: int, size: tuple[int, int] = (8, 8), channels: int = 3, label: int = 0
) -> np.ndarray:
    """A small image whose brightness depends on its label (so a model can learn it)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 80, size=(*size, channels)) + 60 * label
    return np.clip(base, 0, 255).astype(np.uint8)


def write_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def write_image_folder(
    root: Path,
    classes: dict[str, int] | None = None,
    test: dict[str, int] | None = None,
    size: tuple[int, int] = (8, 8),
    suffix: str = ".png",
) -> Path:
    """root/train/<class>/<i>.png (and root/test/... when `test` gives counts)."""
    classes = classes or {"cat": 10, "dog": 10, "fox": 10}
    for split, counts in (("train", classes), ("test", test or {})):
        for label, (name, count) in enumerate(counts.items()):
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                write_image(
                    root / split / name / f"{i:03d}{suffix}", image_array(seed, size, 3, label)
                )
    return root


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows(n: int, seed: int = 0, labels=("benign", "malignant")) -> list[list]:
    """Rows of three features and a label that the first feature predicts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % len(labels)
        rows.append(
            [
                round(float(rng.normal(label * 3, 1)), 4),
                round(float(rng.normal()), 4),
                round(float(rng.uniform(0, 10)), 4),
                labels[label],
            ]
        )
    return rows


def write_cifar10(root: Path, n_train: int = 50, n_test: int = 20, batches: int = 5) -> Path:
    """A miniature cifar-10-batches-py/ in CIFAR's own pickle format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def batch(n: int, label_offset: int) -> dict:
        labels = [(i + label_offset) % 10 for i in range(n)]
        return {
            b"batch_label": b"x",
            b"labels": labels,
            b"data": rng.integers(0, 256, size=(n, 3072)).astype(np.uint8),
            b"filenames": [b"f"] * n,
        }

    for i in range(1, batches + 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // batches, i)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, 0)))
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}))
    return root
