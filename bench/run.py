"""Performance benchmark of compress on MNIST: one table, also written as JSON and Markdown.

    python bench/run.py --data-root ../shared/data          # what `make bench` runs
    python bench/run.py --repeats 5                         # steadier medians, slower
    python bench/run.py --skip-pipeline                     # training rows only
    python bench/run.py --threads 0                         # torch's default threads (one per core)
    python bench/run.py --speedup runs/lenet300 runs/lenet5 # only: each artifact's speedup vs dense

Every figure is the median of several runs, next to a baseline measured in the same run, so
that the ratios stay meaningful on a busy machine. Runs that are compared are interleaved
(round 1: A, B; round 2: B, A; ...) so that a change in background load hits both. Timings
use one torch thread unless --threads says otherwise: a 784-128-10 network at batch 64 gains
nothing from more, and on cores shared with other work OpenMP's waiting threads make epochs
swing by 10x or more (the last row measures that).
bench/README.md says what each row measures and why its target is what it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.config import PipelineConfig, load_pipeline
from compress.data import Dataset, load_dataset
from compress.pipeline import STAGE_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Row, describe_machine, format_text, median, write_outputs  # noqa: E402
from speedup import speedup_rows  # noqa: E402
from workloads import (  # noqa: E402
    CompressLoop,
    LatencyProbe,
    TorchvisionLoop,
    run_pipeline_cli,
    steps_per_epoch,
    torchvision_layout,
)

REPO = Path(__file__).resolve().parent.parent
SPEEDUP_TARGET = 4.0  # compress epoch vs the torchvision DataLoader epoch
ACCURACY_TOLERANCE_PTS = 1.0  # the two loops shuffle differently: they agree within noise
L1_OVERHEAD_TARGET = 0.15  # L1 penalty on vs off, per step
L1_PAIRS_PER_REPEAT = 3  # compress epochs take about a second: more pairs for a small difference
PIPELINE_TARGET_S = 120.0
LATENCY_TARGET = 1.0  # quantized p50 / dense p50
DIAGNOSTIC_SAMPLES = 6400  # training images in the threads diagnostic's epochs (100 steps)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def interleave(loops: dict, rounds: int, what: str) -> dict[str, list[dict]]:
    """`rounds` epochs of every loop, the order rotated each round; the results by loop."""
    runs: dict[str, list[dict]] = {name: [] for name in loops}
    for r in range(rounds):
        for name in rotated(list(loops), r):
            runs[name].append(loops[name].epoch())
        log(
            f"{what} {r + 1}/{rounds}: "
            + ", ".join(f"{n} {runs[n][-1]['seconds']:.2f}s" for n in loops)
        )
    return runs


def seconds_of(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    return {name: [x["seconds"] for x in xs] for name, xs in runs.items()}


def loop_rows(
    config: PipelineConfig, data: Dataset, data_root: str, repeats: int, tmp: Path
) -> tuple[list[Row], float]:
    """Row 1: compress's epoch and accuracy against the torchvision recipe's; and its median
    epoch."""
    log("unpacking MNIST into torchvision's layout ...")
    tv_root = torchvision_layout(data_root, tmp / "torchvision")
    # Both loops train their own copy of the same initial model, one epoch per round.
    loops = {
        "compress": CompressLoop(
            config, config.train, data, torch.device("cpu"), tmp / "compress.pt"
        ),
        "torchvision": TorchvisionLoop(config, config.train, tv_root),
    }
    runs = interleave(loops, repeats, "epoch")
    seconds = {name: median(xs) for name, xs in seconds_of(runs).items()}
    accuracy = {name: xs[-1]["test_accuracy"] for name, xs in runs.items()}
    speedup = seconds["torchvision"] / seconds["compress"]
    delta_pts = 100 * (accuracy["compress"] - accuracy["torchvision"])
    epochs = f"{repeats} epoch{'s' if repeats > 1 else ''}"
    rows = [
        Row(
            "train epoch, compress fit vs torchvision DataLoader (ratio = speed-up)",
            seconds["compress"],
            "s",
            seconds["torchvision"],
            speedup,
            fmt="{:.2f}",
            target=f">= {SPEEDUP_TARGET:.0f}x",
            passed=speedup >= SPEEDUP_TARGET,
            note=f"median of {repeats}; train + test eval, batch {config.data.batch_size}",
            samples=seconds_of(runs),
        ),
        Row(
            f"test accuracy after {epochs}, compress vs torchvision (ratio = Δ)",
            accuracy["compress"],
            "",
            accuracy["torchvision"],
            delta_pts,
            fmt="{:.2%}",
            ratio_fmt="{:+.2f} pts",
            target=f"|Δ| <= {ACCURACY_TOLERANCE_PTS:g} pt",
            passed=abs(delta_pts) <= ACCURACY_TOLERANCE_PTS,
            note="same seed and initial weights; shuffles differ",
            samples={name: [x["test_accuracy"] for x in xs] for name, xs in runs.items()},
        ),
    ]
    return rows, seconds["compress"]


def l1_row(config: PipelineConfig, data: Dataset, repeats: int, tmp: Path) -> Row:
    """Row 2: compress's training step with the L1 penalty against the same step without it."""
    pairs = L1_PAIRS_PER_REPEAT * repeats
    no_l1 = config.with_overrides({"train.l1.lambda": 0.0}).train
    cpu = torch.device("cpu")
    loops = {
        "l1": CompressLoop(config, config.train, data, cpu, tmp / "compress-l1.pt"),
        "no-l1": CompressLoop(config, no_l1, data, cpu, tmp / "compress-no-l1.pt"),
    }
    seconds = seconds_of(interleave(loops, pairs, "L1 on/off"))
    steps = steps_per_epoch(data, config.data.batch_size)
    per_step = {name: 1e3 * median(xs) / steps for name, xs in seconds.items()}
    # The two epochs of a pair ran back to back, under the same background load: the median of
    # their ratios is steadier than the ratio of the medians when that load drifts.
    overhead = median([a / b for a, b in zip(seconds["l1"], seconds["no-l1"], strict=True)]) - 1
    return Row(
        f"train step, L1 penalty (lambda {config.train.l1.lambda_:g}) vs none (ratio = added)",
        per_step["l1"],
        "ms",
        per_step["no-l1"],
        overhead,
        fmt="{:.3f}",
        ratio_fmt="{:+.1%}",
        target=f"<= +{L1_OVERHEAD_TARGET:.0%}",
        passed=overhead <= L1_OVERHEAD_TARGET,
        note=f"median epoch of {pairs} / {steps} steps; ratio: median of the {pairs} pairs",
        samples=seconds,
    )


def threads_row(
    config: PipelineConfig, data: Dataset, repeats: int, threads: int, tmp: Path
) -> Row | None:
    """compress's step on torch's default thread count against the bench's: a diagnostic.

    torch's OpenMP threads spin while they wait for each other; when other work holds the
    cores, a loop of many small ops can run ten times slower or worse on 2 threads than on 1.
    On a tenth of the training set, because such epochs can take minutes.
    """
    current = torch.get_num_threads()
    if threads == current:
        return None
    cut = dataclasses.replace(
        data,
        images={
            "train": data.images["train"][:DIAGNOSTIC_SAMPLES],
            "test": data.images["test"][:1000],
        },
        labels={
            "train": data.labels["train"][:DIAGNOSTIC_SAMPLES],
            "test": data.labels["test"][:1000],
        },
    )
    cpu = torch.device("cpu")
    loops = {
        f"{threads} threads": CompressLoop(
            config, config.train, cut, cpu, tmp / "compress-threads.pt", threads=threads
        ),
        f"{current} thread{'s' if current > 1 else ''}": CompressLoop(
            config, config.train, cut, cpu, tmp / "compress-bench.pt"
        ),
    }
    seconds = seconds_of(interleave(loops, repeats, "threads"))
    value, baseline = (median(xs) for xs in seconds.values())
    return Row(
        f"train epoch of {DIAGNOSTIC_SAMPLES:,} images, "
        f"torch's default {threads} threads vs {current} (ratio)",
        value,
        "s",
        baseline,
        value / baseline,
        fmt="{:.2f}",
        note=f"median of {repeats}; "
        "diagnostic: > 1x when other work on the cores stalls the threads",
        samples=seconds,
    )


def device_row(
    config: PipelineConfig, data: Dataset, repeats: int, cpu_seconds: float, tmp: Path
) -> Row:
    """Row 5: compress's epoch on CUDA, when there is a GPU (never assumed)."""
    figure = "train epoch, compress fit on cuda vs cpu (ratio = speed-up)"
    if not torch.cuda.is_available():
        return Row(figure, None, note="GPU not available (skipped)")
    loop = CompressLoop(config, config.train, data, torch.device("cuda"), tmp / "compress-cuda.pt")
    loop.epoch()  # warm-up: CUDA context and kernels
    seconds = [loop.epoch()["seconds"] for _ in range(repeats)]
    log(f"cuda epochs: {', '.join(f'{s:.2f}s' for s in seconds)}")
    value = median(seconds)
    return Row(
        figure,
        value,
        "s",
        cpu_seconds,
        cpu_seconds / value,
        fmt="{:.2f}",
        note=f"{torch.cuda.get_device_name(0)}; median of {repeats} after a warm-up epoch",
        samples={"cuda": seconds},
    )


def pipeline_rows(
    pipeline: Path, data_root: str | None, repeats: int, out_dir: Path, threads: int | None
) -> tuple[list[Row], dict]:
    """Row 3: `compress run PIPELINE --force`, in all and per stage (from report.json)."""
    runs = []
    for r in range(repeats):
        # A fresh folder: --force reruns every stage, but a stage still resumes from its epoch
        # checkpoint (train/last.pt), which would skip the training being timed.
        if out_dir.exists():
            if any(out_dir.iterdir()) and not (out_dir / "pipeline.json").is_file():
                raise SystemExit(f"{out_dir} is not a compress run folder; not deleting it")
            shutil.rmtree(out_dir)
        runs.append(run_pipeline_cli(pipeline, out_dir, data_root, threads))
        log(f"pipeline run {r + 1}/{repeats}: {runs[-1]['seconds']:.1f}s")
    total = median([run["seconds"] for run in runs])
    stage_sum = median([run["report"]["total_seconds"] for run in runs])
    failed = [a["name"] for a in runs[-1]["report"]["artifacts"] if a["status"] != "ok"]
    note = f"median of {repeats}; wall clock of the command, its stages sum to {stage_sum:.1f} s"
    rows = [
        Row(
            f"pipeline `compress run {pipeline.name} --force`",
            total,
            "s",
            fmt="{:.1f}",
            target=f"< {PIPELINE_TARGET_S:.0f} s",
            passed=total < PIPELINE_TARGET_S and not failed,
            note=note + (f"; verification failed: {', '.join(failed)}" if failed else ""),
            samples={
                "wall": [run["seconds"] for run in runs],
                "stages_total": [run["report"]["total_seconds"] for run in runs],
            },
        )
    ]
    for name in STAGE_NAMES:
        values = [
            s["seconds"] for run in runs for s in run["report"]["stages"] if s["name"] == name
        ]
        if values:
            rows.append(
                Row(
                    f"  stage {name}",
                    median(values),
                    "s",
                    fmt="{:.1f}",
                    samples={"seconds": values},
                )
            )
    return rows, runs[-1]["report"]


def latency_rows(
    run_dir: Path, report: dict, data: Dataset, repeats: int, repetitions: int
) -> list[Row]:
    """Row 4: onnxruntime latency at batch 1 (1 thread) of each artifact, against dense."""
    probe = LatencyProbe(run_dir, report, data.images["test"][:1000].numpy())
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in probe.names}
    for r in range(repeats):
        for name in rotated(probe.names, r):
            measured[name].append(probe.measure(name, repetitions))
    p50 = {n: median([m[0] for m in ms]) for n, ms in measured.items()}
    p95 = {n: median([m[1] for m in ms]) for n, ms in measured.items()}
    in_report = {a["name"]: a for a in report["artifacts"]}
    base = "dense" if "dense" in p50 else probe.names[0]
    rows = []
    for name in probe.names:
        ratio = p50[name] / p50[base]
        quantized = "int" in name and name != base  # int8 and int4 must be no slower than dense
        rows.append(
            Row(
                f"onnxruntime b1 p50, {name} vs {base}",
                p50[name],
                "ms",
                p50[base],
                ratio,
                fmt="{:.4f}",
                target=f"<= {LATENCY_TARGET:.2f}x" if quantized else "-",
                passed=ratio <= LATENCY_TARGET if quantized else None,
                note=f"p95 {p95[name]:.4f} ms ({base} {p95[base]:.4f}); "
                f"verify stage p50 {in_report[name]['latency_ms_b1_p50']:.4f}",
                samples={
                    "p50": [m[0] for m in measured[name]],
                    "p95": [m[1] for m in measured[name]],
                },
            )
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-root", help="folder holding the MNIST IDX files [default: ./data, downloaded]"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per figure (epochs, latency rounds); the median is reported [3]",
    )
    parser.add_argument(
        "--pipeline",
        type=Path,
        default=REPO / "pipelines" / "mnist.toml",
        help="pipeline whose settings are benchmarked [pipelines/mnist.toml]",
    )
    parser.add_argument(
        "--pipeline-repeats",
        type=int,
        default=3,
        help="whole-pipeline runs (about 30 s each on 2 cores) [3]",
    )
    parser.add_argument(
        "--latency-repetitions",
        type=int,
        default=2000,
        help="onnxruntime runs per latency measurement [2000]",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for everything timed, OMP_NUM_THREADS for the pipeline; "
        "0: torch's default (one per core) [1]",
    )
    parser.add_argument(
        "--skip-pipeline", action="store_true", help="skip the pipeline and latency rows"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "runs" / "bench",
        help="folder for bench.json, bench.md and the pipeline's run [runs/bench]",
    )
    parser.add_argument(
        "--speedup",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="only time every artifact of these finished runs against their dense model, "
        "interleaved in one process, and print the speed-ups",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if min(args.repeats, args.pipeline_repeats, args.latency_repetitions, args.threads + 1) < 1:
        parser.error(
            "--repeats, --pipeline-repeats and --latency-repetitions must be at least 1, "
            "--threads at least 0"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe_machine()
    config = load_pipeline(args.pipeline)
    data_root = args.data_root or config.resolve(config.data.root) or "data"
    # validation 0: compress trains on all 60,000 images, as the torchvision loop it is
    # timed against does
    data = load_dataset(config.data.name, data_root, validation=0.0)
    if args.speedup:
        pixels = data.images["test"][:256].numpy()
        rows = [
            row
            for run in args.speedup
            for row in speedup_rows(run, pixels, args.latency_repetitions)
        ]
        print(format_text(machine, rows))
        return 1 if args.strict and any(r.passed is False for r in rows) else 0
    if data.name != "mnist":
        raise SystemExit(
            f"{args.pipeline}: the benchmark compares against torchvision's MNIST; got {data.name}"
        )

    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        rows, cpu_epoch = loop_rows(config, data, str(data_root), args.repeats, Path(tmp))
        rows.append(l1_row(config, data, args.repeats, Path(tmp)))
        threads = threads_row(config, data, args.repeats, default_threads, Path(tmp))
        device = device_row(config, data, args.repeats, cpu_epoch, Path(tmp))
    if not args.skip_pipeline:
        run_dir = args.out / "pipeline"
        pipeline, report = pipeline_rows(
            args.pipeline, args.data_root, args.pipeline_repeats, run_dir, args.threads
        )
        rows += pipeline + latency_rows(
            run_dir, report, data, args.repeats, args.latency_repetitions
        )
        rows += speedup_rows(run_dir, data.images["test"][:256].numpy(), args.latency_repetitions)
    rows += [device] + ([threads] if threads else [])

    settings = {
        "pipeline": str(args.pipeline),
        "data_root": str(data_root),
        "repeats": args.repeats,
        "pipeline_repeats": args.pipeline_repeats,
        "latency_repetitions": args.latency_repetitions,
        "threads": args.threads,
        "skip_pipeline": args.skip_pipeline,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    print(format_text(machine, rows))
    paths = write_outputs(args.out, machine, settings, rows)
    print(
        f"\nwritten: {', '.join(str(p) for p in paths)} ({settings['seconds']:.0f} s in all; "
        f"load average at end {settings['load_average_at_end']})"
    )
    return 1 if args.strict and any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
