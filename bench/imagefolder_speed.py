"""Image-folder timings: decode once, load from the cache, train against IDX MNIST.

    python bench/mnist_png_folder.py --data-root ../shared/data --out /tmp/mnist-png
    python bench/imagefolder_speed.py --folder /tmp/mnist-png --data-root ../shared/data

1. decode: the folder's images decoded into tensors (a fresh, empty cache folder);
2. cache: the same load again, twice (tensors read from the cache);
3. training: one epoch of simplenet (batch 64, SGD, one torch thread) on the cached folder
   and on the IDX files, interleaved (A, B, A, B, ...): images per second of each, and
   their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder", required=True, help="MNIST written as PNG files (bench/mnist_png_folder.py)"
    )
    parser.add_argument("--data-root", default="data", help="folder with the MNIST IDX files")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["COMPRESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="compress-cache-")

    import torch

    torch.set_num_threads(1)
    from compress.config import TrainConfig, parse_pipeline
    from compress.data import load_data, load_dataset
    from compress.registry import build_model
    from compress.training import RunSettings, fit

    config = parse_pipeline(
        {
            "data": {
                "name": "imagefolder",
                "root": args.folder,
                "image_size": [28, 28],
                "channels": 1,
            }
        },
        "bench",
    ).data
    for what in ("decode (empty cache)", "cache", "cache"):
        started = time.perf_counter()
        folder = load_data(config)
        print(
            f"{what}: {time.perf_counter() - started:.2f} s for "
            f"{sum(folder.size(s) for s in ('train', 'val', 'test'))} images",
            flush=True,
        )
    idx = load_dataset("mnist", args.data_root, download=False)
    assert folder.size("train") == idx.size("train")

    settings = RunSettings(
        device=torch.device("cpu"), batch_size=64, eval_batch_size=1000, seed=0, progress=False
    )
    train = TrainConfig(epochs=1, lr=0.01)
    speeds: dict[str, list[float]] = {"idx": [], "folder": []}
    for _ in range(args.rounds):
        for name, data in (("idx", idx), ("folder", folder)):
            torch.manual_seed(0)
            model = build_model("simplenet", kwargs={"num_classes": 10})
            result = fit(model, data, train, settings, desc=name)
            seconds = result.history[-1]["seconds"]
            speeds[name].append(data.size("train") / seconds)
            print(
                f"{name}: {speeds[name][-1]:,.0f} images/s "
                f"(one epoch incl. evaluation, {seconds:.1f} s)",
                flush=True,
            )
    ratios = [f / i for f, i in zip(speeds["folder"], speeds["idx"], strict=True)]
    print(
        f"folder / idx speed per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {sorted(ratios)[len(ratios) // 2]:.3f} (1 torch thread)"
    )


if __name__ == "__main__":
    main()
