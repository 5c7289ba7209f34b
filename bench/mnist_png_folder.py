"""Write MNIST as an image folder of PNG files (torchvision's ImageFolder layout).

    python bench/mnist_png_folder.py --data-root ../shared/data --out data/mnist-png
    python bench/mnist_png_folder.py --out data/mnist-png-small --train 6000 --test 1000

Writes OUT/train/<digit>/<index>.png and OUT/test/<digit>/<index>.png (8-bit grayscale,
28x28), the input of pipelines/imagefolder.toml and of the image-folder cache timing: the
same images as the IDX files, so a run on the folder can be compared with one on MNIST.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

from compress.data import load_dataset


def write_folder(out: Path, data_root: str, train: int | None, test: int | None) -> int:
    data = load_dataset("mnist", data_root, download=False, validation=0.0)
    count = 0
    for split, limit in (("train", train), ("test", test)):
        images, labels = data.images[split], data.labels[split]
        n = len(labels) if limit is None else min(limit, len(labels))
        for i in range(n):
            folder = out / split / data.classes[int(labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy(), mode="L").save(folder / f"{i:05d}.png")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding the MNIST IDX files")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write train/ and test/ into"
    )
    parser.add_argument("--train", type=int, default=None, help="first N training images only")
    parser.add_argument("--test", type=int, default=None, help="first N test images only")
    args = parser.parse_args(argv)
    if (args.out / "train").exists():
        print(f"error: {args.out / 'train'} exists already; choose another --out", file=sys.stderr)
        return 2
    started = time.perf_counter()
    count = write_folder(args.out, args.data_root, args.train, args.test)
    print(f"wrote {count} PNG files under {args.out} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
