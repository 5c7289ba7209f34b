"""How often verify's SLOWER flag flips between reruns, by the number of timing rounds.

    python bench/latency_flips.py runs/lenet5-fast --reruns 30 --settings 5x50 20x200 40x400

The artifacts of a finished run, and dense a second time (a file that cannot be slower than
itself), are timed as verify times them (compress.stages.verify.timed: interleaved in
rounds, one thread, on random inputs of each file's shape) `--reruns` times for each
ROUNDSxREPETITIONS setting. Per artifact it prints the range of `latency_vs_dense` over the
reruns, the mean width of its 95% interval, and how often each rule would flag it: p50 more
than 1.1x dense's (the old rule), p50 above dense's, and the interval's low end above 1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from compress.files import read_json
from compress.stages.verify import make_session, timed


def random_input(path: Path, rng: np.random.Generator) -> np.ndarray:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
    shape = [d.dim_value or 1 for d in dims.dim][1:]
    return rng.standard_normal((256, *shape)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--reruns", type=int, default=30)
    parser.add_argument("--settings", nargs="+", default=["5x50", "10x100", "20x200", "40x400"])
    args = parser.parse_args()
    artifacts = read_json(args.run_dir / "report.json")["artifacts"]
    artifacts = sorted(artifacts, key=lambda a: a["name"] != "dense")
    names = [a["name"] for a in artifacts] + ["dense (same file again)"]
    paths = [args.run_dir / a["path"] for a in artifacts] + [args.run_dir / artifacts[0]["path"]]
    rng = np.random.default_rng(0)
    inputs = [random_input(p, rng) for p in paths]
    sessions = [make_session(p, threads=1) for p in paths]
    for setting in args.settings:
        rounds, repetitions = map(int, setting.split("x"))
        started = time.perf_counter()
        runs = [timed(sessions, inputs, repetitions, rounds) for _ in range(args.reruns)]
        seconds = (time.perf_counter() - started) / args.reruns
        print(f"rounds {rounds}, repetitions {repetitions}: {seconds:.1f} s per timing")
        for i, name in enumerate(names[1:], start=1):
            rows, base = [r[i] for r in runs], [r[0] for r in runs]
            ratios = [r["vs_base"] for r in rows]
            width = np.mean([r["vs_base_high"] - r["vs_base_low"] for r in rows])
            old = sum(r["p50"] > 1.1 * b["p50"] for r, b in zip(rows, base, strict=True))
            bare = sum(r["p50"] > b["p50"] for r, b in zip(rows, base, strict=True))
            new = sum(r["vs_base_low"] > 1.0 for r in rows)
            print(
                f"  {name:24s} {min(ratios):.3f}x..{max(ratios):.3f}x, interval width "
                f"{width:.3f}; flagged: p50 > 1.1x {old}/{args.reruns}, p50 > 1x "
                f"{bare}/{args.reruns}, interval above 1 {new}/{args.reruns}"
            )


if __name__ == "__main__":
    main()
