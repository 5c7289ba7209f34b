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


# --- sound: WAV files written here byte by byte (any encoding), and class folders of tones


def wav_bytes(
    x: np.ndarray, rate: int = 16000, bits: int = 16, tag: int = 1, extensible: bool = False
) -> bytes:
    """A WAV file of `x` ([n] or [channels, n], floats in [-1, 1]) in the given encoding:
    tag 1 PCM (8/16/24/32-bit), 3 float (32/64), others (6: A-law, ...) as raw bytes."""
    import struct

    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    channels = x.shape[0]
    frames = x.T.reshape(-1)
    if tag == 3:
        data = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        data = np.clip(np.round(frames * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = np.clip(np.round(frames * 8388607), -8388608, 8388607).astype("<i4")
        data = b"".join(v.tobytes()[:3] for v in ints)
    elif bits in (16, 32):
        top = 2 ** (bits - 1) - 1
        ints = np.clip(np.round(frames * top), -top - 1, top)
        data = ints.astype("<i2" if bits == 16 else "<i4").tobytes()
    else:
        data = bytes(len(frames) * max(1, bits // 8))
    align = channels * max(1, bits // 8)
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align,
                      align, bits)  # fmt: skip
    if extensible:
        guid = struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, bits, 0) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, seconds: float = 0.25, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A sine of `freq` Hz with a little seeded noise, amplitude about 0.5."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).normal(scale=0.02, size=len(t))
    return 0.5 * np.sin(2 * np.pi * freq * t + seed % 7) + noise


def write_audio_folder(
    root: Path,
    classes: dict[str, int] | None = None,
    test: dict[str, int] | None = None,
    seconds: float = 0.25,
    rate: int = 16000,
    noise: bool = True,
    edit: int = 0,
    val: dict[str, int] | None = None,
) -> Path:
    """root/train/<class>/<i>.wav (and root/test/..., root/val/...): a tone per class (400 Hz
    apart), each clip with its own noise; with `noise`, root/train/_background_noise_/hum.wav."""
    classes = classes or {"low": 8, "high": 8}
    for split, counts in (("train", classes), ("test", test or {}), ("val", val or {})):
        for label, (name, count) in enumerate(counts.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}/{edit}".encode())
                x = tone(300 + 400 * label, seconds, rate, seed)
                (folder / f"{i:03d}.wav").write_bytes(wav_bytes(x, rate))
    if noise:
        write_hum(root / "train" / "_background_noise_", seconds * 3, rate)
    return root


def write_hum(folder: Path, seconds: float = 0.75, rate: int = 16000) -> Path:
    """folder/hum.wav: seeded noise, the background noise that training mixes in."""
    folder.mkdir(parents=True, exist_ok=True)
    hum = np.random.default_rng(1).normal(scale=0.3, size=int(rate * seconds))
    (folder / "hum.wav").write_bytes(wav_bytes(np.clip(hum, -1, 1), rate))
    return folder / "hum.wav"


def write_speech_commands(
    root: Path,
    words: dict[str, int] | None = None,
    testing: list[str] = (),
    validation: list[str] | None = None,
    seconds: float = 0.25,
) -> Path:
    """Speech Commands as it ships: root/<word>/speaker<i>_nohash_0.wav (a tone per word,
    400 Hz apart), root/_background_noise_/hum.wav, and root/testing_list.txt (and
    root/validation_list.txt unless `validation` is None) holding the paths given."""
    words = words or {"yes": 6, "no": 6}
    for label, (word, count) in enumerate(words.items()):
        (root / word).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            x = tone(300 + 400 * label, seconds, seed=zlib.crc32(f"{word}/{i}".encode()))
            (root / word / f"speaker{i}_nohash_0.wav").write_bytes(wav_bytes(x))
    write_hum(root / "_background_noise_", seconds * 3)
    (root / "testing_list.txt").write_text("".join(f"{p}\n" for p in testing))
    if validation is not None:
        (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in validation))
    return root
