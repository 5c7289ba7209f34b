"""Latency of channel-pruned CNNs against their dense model, by how the kept counts round.

    python bench/widths.py                                   # mobilenet_v3_small and resnet18
    python bench/widths.py --models torchvision:resnet18 --amounts 0.3 0.7 --round-to 1 8
    python bench/widths.py --round-to 8 measured    # [prune] widths = "measured" beside 8

Each model (random weights: latency does not depend on their values) is built for 10
classes at 32x32, its Conv channels pruned with compress's `channels` method at each amount
and `round_to`, shrunk (compress.pruning.shrink) and exported; then every variant of a model
is timed interleaved with its dense export at batch 1 on one onnxruntime thread
(compress.latency: the median per-round ratio and its 95% interval). onnxruntime's CPU
convolutions run in blocked layouts (NCHWc, 8 or 16 channels per block), so a count off a
multiple can cost more than the channels it saves.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from compress.config import PruneConfig
from compress.latency import summarize, timed_rounds
from compress.pruning import make_permanent, prune_oneshot
from compress.pruning.shrink import shrink
from compress.registry import build_model
from compress.stages.export import to_onnx
from compress.stages.verify import make_session

SHAPE = (3, 32, 32)


def pruned(name: str, amount: float, round_to: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, kwargs={"num_classes": 10}, input_shape=SHAPE).eval()
    if amount == 0:
        return model
    widths = {"widths": "measured"} if round_to == "measured" else {"round_to": int(round_to)}
    config = PruneConfig(method="channels", amount=amount, **widths)
    prune_oneshot(model, config, torch.zeros(2, *SHAPE))
    make_permanent(model)
    with contextlib.redirect_stdout(io.StringIO()):
        shrink(model, SHAPE)
    return model


def measure(name: str, amounts, round_tos, rounds: int, repetitions: int) -> list[str]:
    variants = [(0.0, "1")] + [(a, r) for a in amounts for r in round_tos]
    sessions = []
    with tempfile.TemporaryDirectory() as tmp:
        for amount, round_to in variants:
            model = pruned(name, amount, round_to)
            path = Path(tmp) / f"{amount}-{round_to}.onnx"
            with contextlib.redirect_stdout(io.StringIO()):
                path.write_bytes(to_onnx(model, SHAPE, 17).SerializeToString())
            sessions.append(make_session(path, threads=1))
        x = np.random.default_rng(0).standard_normal((16, *SHAPE)).astype(np.float32)
        rows = summarize(timed_rounds(sessions, [x] * len(sessions), repetitions, rounds))
    lines = []
    for (amount, round_to), row in zip(variants, rows, strict=True):
        lines.append(
            f"{name} amount {amount:.1f} round_to {round_to:>8s}: p50 {row['p50']:.3f} ms, "
            f"{row['vs_base']:.2f}x dense [{row['vs_base_low']:.2f}, {row['vs_base_high']:.2f}]"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["torchvision:mobilenet_v3_small", "torchvision:resnet18"]
    )
    parser.add_argument("--amounts", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--round-to", nargs="+", default=["1", "4", "8", "16"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        for line in measure(name, args.amounts, args.round_to, args.rounds, args.repetitions):
            print(line, flush=True)


if __name__ == "__main__":
    main()
