"""Write an MNIST-family set as an image folder of PNG files (torchvision's ImageFolder layout).

    python bench/mnist_png_folder.py --data-root ../shared/data --out data/mnist-png
    python bench/mnist_png_folder.py --out data/mnist-png-small --train 6000 --test 1000
    python bench/mnist_png_folder.py --dataset fashion-mnist --out data/photos \\
        --per-class 500 --test-per-class 200 --size 32 --tint

Writes OUT/train/<class>/<index>.png and OUT/test/<class>/<index>.png: by default 8-bit
grayscale at 28x28, the same images as the IDX files (the input of pipelines/imagefolder.toml
and of the image-folder cache timing, so a run on the folder can be compared with one on
MNIST). With --tint each image becomes an RGB photo-like picture instead: the object in one
random colour on a background of another (both drawn per image, seeded), resized to --size,
so a network must look at shape, not colour, and three input channels carry different
values (the input of pipelines/photos-fast.toml). Fashion-MNIST: apt-get install
dataset-fashion-mnist, or its IDX files under --data-root.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from compress.data import load_dataset


def tinted(gray: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """The grayscale image as RGB: object colour * intensity + background colour * the rest."""
    alpha = gray.astype(np.float32)[..., None] / 255.0
    fore, back = rng.uniform(0.35, 1.0, 3), rng.uniform(0.0, 0.45, 3)
    rgb = alpha * fore + (1 - alpha) * back
    noise = rng.normal(0.0, 0.02, rgb.shape)  # sensor noise, so flat areas are not flat
    image = Image.fromarray(np.clip((rgb + noise) * 255, 0, 255).astype(np.uint8), mode="RGB")
    return image.resize((size, size), Image.BILINEAR) if size != gray.shape[0] else image


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of every class, in their original order."""
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:per_class]] = True
    return np.flatnonzero(keep)


def write_folder(out: Path, args: argparse.Namespace) -> int:
    data = load_dataset(args.dataset, args.data_root, download=False, validation=0.0)
    rng = np.random.default_rng(args.seed)
    count = 0
    limits = {
        "train": (args.train, args.per_class),
        "test": (args.test, args.test_per_class),
    }
    for split, (limit, per_class) in limits.items():
        images, labels = data.images[split], data.labels[split].numpy()
        if per_class is not None:
            indices = first_per_class(labels, per_class)
        else:
            indices = np.arange(len(labels) if limit is None else min(limit, len(labels)))
        for i in indices:
            folder = out / split / data.classes[int(labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            gray = images[i, 0].numpy()
            if args.tint:
                image = tinted(gray, rng, args.size)
            else:
                image = Image.fromarray(gray, mode="L")
                if args.size != gray.shape[0]:
                    image = image.resize((args.size, args.size), Image.BILINEAR)
            image.save(folder / f"{i:05d}.png")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding the IDX files")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "kmnist"])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write train/ and test/ into"
    )
    parser.add_argument("--train", type=int, default=None, help="first N training images only")
    parser.add_argument("--test", type=int, default=None, help="first N test images only")
    parser.add_argument(
        "--per-class", type=int, default=None, help="first N training images of each class"
    )
    parser.add_argument(
        "--test-per-class", type=int, default=None, help="first N test images of each class"
    )
    parser.add_argument("--size", type=int, default=28, help="side of the written images")
    parser.add_argument(
        "--tint", action="store_true", help="RGB: random object and background colours"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tints")
    args = parser.parse_args(argv)
    if (args.out / "train").exists():
        print(f"error: {args.out / 'train'} exists already; choose another --out", file=sys.stderr)
        return 2
    started = time.perf_counter()
    count = write_folder(args.out, args)
    print(f"wrote {count} PNG files under {args.out} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
