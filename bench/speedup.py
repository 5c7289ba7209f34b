"""Speed-up of every artifact of a finished run against its dense model, timed interleaved.

    rows = speedup_rows(Path("runs/lenet300"), repetitions=2000)   # bench rows, one per artifact

All sessions (one intra-op thread each) are timed in one process in rounds: each round runs
every artifact's share of batch-1 calls in turn (compress.stages.verify's
interleaved_latency_ms), so background load falls on dense and the artifact alike. The
speed-up is dense p50 / artifact p50; the target is the one the pipelines promise: no
artifact more than 1.1x dense's latency (speed-up >= 0.91x).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from results import Row

from compress.encode.onnx_tools import get_metadata
from compress.files import read_json
from compress.stages.verify import interleaved_latency_ms, make_session, model_inputs

MAX_SLOWDOWN = 1.1  # an artifact may take at most this times dense's p50


def measure(
    run_dir: Path, pixels, repetitions: int, rounds: int = 20
) -> dict[str, tuple[float, float]]:
    """artifact name -> (p50, p95) ms at batch 1, every artifact of the run timed interleaved."""
    artifacts = read_json(run_dir / "report.json")["artifacts"]
    paths = {a["name"]: run_dir / a["path"] for a in artifacts}
    # each file's own inputs (one that takes only the used features gets those)
    inputs = [
        model_inputs(pixels, get_metadata(onnx.load(str(p), load_external_data=False)))
        for p in paths.values()
    ]
    sessions = [make_session(path, threads=1) for path in paths.values()]
    timings = interleaved_latency_ms(sessions, inputs, repetitions, rounds)
    return dict(zip(paths, timings, strict=True))


def rows_from_timings(
    run: str, timings: dict[str, tuple[float, float]], baseline: str = "dense"
) -> list[Row]:
    """One row per artifact but the baseline: its p50, the baseline's, the speed-up and the
    target."""
    base_p50, base_p95 = timings[baseline]
    rows = []
    for name, (p50, p95) in timings.items():
        if name == baseline:
            continue
        speedup = base_p50 / p50
        rows.append(
            Row(
                f"speed-up vs {baseline}, {run}: {name}",
                p50,
                "ms",
                base_p50,
                speedup,
                fmt="{:.4f}",
                target=f">= {1 / MAX_SLOWDOWN:.2f}x",
                passed=speedup >= 1 / MAX_SLOWDOWN,
                note=f"p95 {p95:.4f} ms ({baseline} {base_p95:.4f}); interleaved in one process",
                samples={"p50": p50, "p95": p95, "baseline_p50": base_p50},
            )
        )
    return rows


def speedup_rows(run_dir: Path, pixels, repetitions: int, rounds: int = 20) -> list[Row]:
    return rows_from_timings(run_dir.name, measure(run_dir, pixels, repetitions, rounds))
