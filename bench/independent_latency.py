"""Batch-1 latency of ONNX files against a dense one, timed by a loop of its own.

    python bench/independent_latency.py runs/x/dense.onnx runs/x/pruned.onnx runs/y/pruned.onnx

A check on compress's own timing (compress.latency) that shares none of its code: numpy,
onnxruntime (one intra-op thread, one inter-op thread) and time.perf_counter only. Every file
gets the same random batch-1 input of the dense file's shape; the files are called in turn,
one call each, for `--calls` rounds after a warm-up, so load on the machine falls on all of
them alike. Prints each file's median call in ms and its median over dense's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dense")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    paths = [args.dense, *args.files]
    sessions = [session(p) for p in paths]
    first = sessions[0].get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in first.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, feed in zip(sessions, feeds, strict=True):
        for _ in range(args.warmup):
            s.run(None, feed)
    times = np.zeros((len(sessions), args.calls))
    for i in range(args.calls):
        for k in range(len(sessions)):
            j = (i + k) % len(sessions)  # a different file first each round
            started = time.perf_counter()
            sessions[j].run(None, feeds[j])
            times[j, i] = time.perf_counter() - started
    medians = np.median(times, axis=1) * 1e3
    for path, median in zip(paths, medians, strict=True):
        print(f"{path}: {median:.4f} ms, {median / medians[0]:.3f}x dense")


if __name__ == "__main__":
    main()
