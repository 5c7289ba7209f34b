"""Write a synthetic 3-axis accelerometer data set: windows [T=128, F=3] of six motions.

    python bench/make_sensor_arrays.py --out data/sensors                 # ~20 MB, npy pairs
    python bench/make_sensor_arrays.py --out /tmp/big --size-gb 4 --dtype float16
    python bench/make_sensor_arrays.py --out data/sensors --format npz

Writes OUT/train_x.npy, OUT/train_y.npy, OUT/test_x.npy, OUT/test_y.npy (or OUT/train.npz
and OUT/test.npz, each with x and y): x float32 (or float16) [N, 128, 3], y the motion
names as strings. The input of pipelines/sensors.toml.

Each motion is a sum of sinusoids with its own frequencies and amplitudes per axis (a walk
sways slowly on one axis, a run fast on two, ...), a random phase and speed per window,
gravity on one axis and noise, so the classes overlap a little and a small model learns
them from the shape over time, not from one value. The test set is a fixed, modest size
(`--test`), so that a very large training set still verifies quickly. Large sets are
appended to the .npy file block by block: writing takes little memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

T, F = 128, 3
RATE = 50.0  # samples per second: a window is 2.56 s
# motion -> (frequency in Hz, amplitude) per axis
MOTIONS = {
    "still": ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    "walk": ((1.8, 0.6), (0.9, 0.3), (1.8, 0.4)),
    "run": ((2.6, 0.9), (1.3, 0.5), (2.6, 0.6)),
    "stairs": ((1.6, 0.6), (0.8, 0.4), (1.6, 0.5)),
    "cycle": ((1.2, 0.3), (1.2, 0.6), (0.0, 0.1)),
    "jump": ((1.0, 0.9), (0.0, 0.1), (0.5, 0.4)),
}
BLOCK = 65536  # windows generated at a time


def windows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float32 windows [len(labels), T, F] of the motions `labels` (indices into MOTIONS)."""
    table = np.array(list(MOTIONS.values()), dtype=np.float32)  # [classes, F, 2]
    n = len(labels)
    t = np.arange(T, dtype=np.float32) / RATE
    speed = rng.uniform(0.8, 1.2, size=(n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, F)).astype(np.float32)
    strength = rng.uniform(0.6, 1.4, size=(n, 1, F)).astype(np.float32)  # people differ
    freq, amp = table[labels, :, 0][:, None, :], table[labels, :, 1][:, None, :] * strength
    x = amp * np.sin(2 * np.pi * freq * speed * t[None, :, None] + phase)
    x += 0.3 * amp * np.sin(4 * np.pi * freq * speed * t[None, :, None] + 2 * phase)  # harmonic
    x[:, :, 2] += 1.0  # gravity on z
    x += rng.normal(0, 0.5, size=x.shape).astype(np.float32)
    return x.astype(np.float32)


def write_npy_pair(out: Path, name: str, n: int, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(MOTIONS), size=n)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
    with open(out / f"{name}_x.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (n, T, F)})
        for start in range(0, n, BLOCK):  # appended block by block: flat memory
            f.write(windows(y[start : start + BLOCK], rng).astype(dtype).tobytes())
    np.save(out / f"{name}_y.npy", np.array(list(MOTIONS))[y])


def write_npz(out: Path, name: str, n: int, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(MOTIONS), size=n)
    np.savez(out / f"{name}.npz", x=windows(y, rng).astype(dtype), y=np.array(list(MOTIONS))[y])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sensors"), help="output folder")
    parser.add_argument("--train", type=int, default=12000, help="training windows")
    parser.add_argument("--test", type=int, default=2000, help="test windows")
    parser.add_argument(
        "--size-gb", type=float, help="instead of --train: as many windows as fill this many GB"
    )
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--format", choices=["npy", "npz"], default="npy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train = args.train
    if args.size_gb is not None:
        train = int(args.size_gb * 1e9 / (T * F * np.dtype(args.dtype).itemsize))
    if args.format == "npz" and train > 1_000_000:
        parser.error("an .npz is written from memory: use --format npy for large sets")
    args.out.mkdir(parents=True, exist_ok=True)
    write = write_npy_pair if args.format == "npy" else write_npz
    started = time.perf_counter()
    write(args.out, "train", train, args.dtype, args.seed)
    write(args.out, "test", args.test, args.dtype, args.seed + 1)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.suffix in (".npy", ".npz"))
    print(
        f"{train:,} training and {args.test:,} test windows [{T}, {F}] {args.dtype} "
        f"in {args.out} ({size / 1e9:.2f} GB, {time.perf_counter() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
