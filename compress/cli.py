"""Command line: `compress run|validate|report|models|methods|compare|sweep|tune|sensitivity|
search`.

A thin click layer over the library: user mistakes (CompressError) print one line and exit
with status 2; Ctrl-C exits 130 and a rerun of the same command resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from compress.errors import CompressError, file_system_error, os_error_in
from compress.version import __version__

log = logging.getLogger("compress")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("onnxruntime", "onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A log file on a full disk must not print a traceback of its own: the failing write
    # that follows is reported as one line.
    logging.raiseExceptions = False


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that open files are cleaned up as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _exit_on_sigterm(signum, frame):
    # Once the command is over, a SIGTERM (a launcher stopping the ranks) may land in an
    # exit handler, where an exception only prints "Exception ignored" and a traceback.
    os._exit(143)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class CompressGroup(click.Group):
    """Turns CompressError into one `error:` line and its exit status (2 for input, 1 for the
    file system); any other file-system failure too (status 1); Ctrl-C exits 130, SIGTERM 143."""

    def invoke(self, ctx):
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return self._invoke(ctx)
        finally:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CompressError as exc:
            if not _reported_by_launcher(exc):
                click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(exc.exit_status)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted; run the same command again to resume (finished stages are kept)",
                err=True,
            )
            sys.exit(130)
        except Terminated:
            if _reported_by_launcher(None):
                sys.exit(143)
            click.echo(
                "terminated; run the same command again to resume (finished stages are kept)",
                err=True,
            )
            sys.exit(143)
        except Exception as exc:
            error = os_error_in(exc)
            if error is None:
                raise
            click.echo(f"error: {_one_line(file_system_error(error))}", err=True)
            sys.exit(1)


def _reported_by_launcher(exc: CompressError | None) -> bool:
    """Under `compress run --nproc`, a process stopped because another did (SIGTERM from the
    launcher, a lost peer) prints nothing: the launcher names the one that stopped first."""
    from compress.distributed import PeerLost, launched

    return launched() and (exc is None or isinstance(exc, PeerLost))


@click.group(cls=CompressGroup)
@click.version_option(__version__, prog_name="compress")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, prune, fine-tune, quantize, export and verify a model as small ONNX artifacts.

    A pipeline TOML file describes the run; see pipelines/, README.md and docs/reference.md.
    """
    _setup_logging(verbose)


data_root_option = click.option(
    "--data-root",
    type=click.Path(),
    help=(
        "Folder holding the named data sets' files (overrides their [data] root; an image "
        "folder or CSV pipeline that names its root keeps it)."
    ),
)


def device_option(help_text: str):
    return click.option(
        "--device",
        type=click.Choice(["cpu", "cuda", "auto"]),
        default="cpu",
        show_default=True,
        help=help_text,
    )


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder [default: runs/<pipeline name>].",
)
@data_root_option
@device_option("Where to train; ONNX artifacts are always verified on the CPU.")
@click.option("--force", is_flag=True, help="Run every stage again, ignoring the cache.")
@click.option(
    "--from",
    "from_stage",
    metavar="STAGE",
    help=(
        "Run this stage and the ones after it again (train, prune, finetune, export, quantize, "
        "verify)."
    ),
)
@click.option(
    "--no-progress", is_flag=True, help="No progress bars (the log still shows each epoch)."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for training [default: 1 on 2 CPUs or fewer, else the idle CPUs, at most 4].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with status 3 when an artifact's status is a warning "
    "(at chance while training accuracy is high).",
)
@click.option(
    "--require-budget",
    is_flag=True,
    help="Exit with status 4, one line per artifact saying what it misses, when no artifact "
    "fits the pipeline's [budget].",
)
@click.option(
    "--seeds",
    metavar="N,N,...",
    help="Run once per [data] seed, each in --out/seed-N (default parent: runs/<name>-seeds), "
    "and print each artifact's mean and range over them with a pooled interval.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train in N processes on this machine (data parallel through torch.distributed.run, "
    "gloo on the CPU, nccl on GPUs); [data] batch_size stays the global batch.",
)
def run(
    pipeline,
    out_dir,
    data_root,
    device,
    force,
    from_stage,
    no_progress,
    threads,
    strict,
    require_budget,
    seeds,
    nproc,
):
    """Run PIPELINE (a .toml file) and print the size/accuracy/latency table (its main
    columns, fitted to the terminal; `compress report RUN_DIR --wide` shows them all).

    Finished stages are reused when their settings are unchanged; the run folder keeps
    checkpoints, ONNX artifacts and report.json/.md/.csv.
    """
    from compress.budget import budget_lines, fitting, limits_of
    from compress.config import load_pipeline
    from compress.errors import BudgetError, ConfigError, StrictWarningError
    from compress.pipeline import run_pipeline
    from compress.report import format_table
    from compress.results import FAILED, WARNING, status_kind
    from compress.tables import terminal_width
    from compress.threads import default_threads, torch_threads

    config = load_pipeline(pipeline)
    if require_budget and not limits_of(config.budget).any():
        raise ConfigError(f"--require-budget: {pipeline} has no [budget] limits to check")
    if nproc is not None and nproc > 1:
        if seeds is not None:
            raise ConfigError("--seeds and --nproc: run the seeds one after another instead")
        return _launch(config, nproc, data_root, device)
    options = {
        "data_root": data_root,
        "device": device,
        "force": force,
        "from_stage": from_stage,
        "progress": not no_progress and sys.stderr.isatty(),
    }
    if seeds is not None:
        _run_seeds(config, seeds, out_dir, threads, options)
        return
    with torch_threads(threads or default_threads()):
        report = run_pipeline(config, out_dir=out_dir, **options)
    if "artifacts" not in report:  # a rank other than 0 (compress.distributed): rank 0 reports
        return
    click.echo(format_table(report, terminal_width()))
    run_dir = out_dir or Path("runs") / config.name
    click.echo(f"\nreport: {run_dir / 'report.md'} ({report['total_seconds']:.1f}s of work)")
    warned = [a for a in report["artifacts"] if status_kind(a) == WARNING]
    for artifact in warned:
        what = artifact["status"].removeprefix("warning: ")
        click.echo(f"warning: {artifact['name']}: {what}", err=True)
    failed = [a["name"] for a in report["artifacts"] if status_kind(a) == FAILED]
    if failed:
        click.echo(f"error: verification failed for {', '.join(failed)}", err=True)
        sys.exit(1)
    if strict and warned:
        names = ", ".join(a["name"] for a in warned)
        raise StrictWarningError(
            f"--strict: {names} at chance while training accuracy is high "
            f"(the warnings above; the report is written)"
        )
    if require_budget and not fitting(report["artifacts"]):
        for line in budget_lines(report["artifacts"]):
            click.echo(f"budget: {line}", err=True)
        raise BudgetError("--require-budget: no artifact fits the [budget] (the report is written)")


def _run_seeds(config, seeds: str, out_dir, threads, options: dict) -> None:
    from compress.analysis.seeds import format_seeds, parse_seeds, run_seeds, summarize
    from compress.files import write_json
    from compress.threads import default_threads, torch_threads

    values = parse_seeds(seeds)
    parent = out_dir or Path("runs") / f"{config.name}-seeds"
    with torch_threads(threads or default_threads()):
        reports = run_seeds(config, values, parent, **options)
    rows = summarize(parent, values, reports)
    write_json(parent / "seeds.json", {"seeds": values, "artifacts": rows})
    click.echo(format_seeds(rows).rstrip("\n"))
    click.echo(f"\nruns: {', '.join(str(parent / f'seed-{s}') for s in values)}")


def _launch(config, nproc: int, data_root, device: str) -> None:
    """`compress run --nproc N`: check everything once here (a mistake is one line, before
    any process starts), then the same command without --nproc in N processes."""
    import torch

    from compress.distributed import launch
    from compress.pipeline import check_inputs

    if device == "cuda" and torch.cuda.device_count() < nproc:
        raise CompressError(
            f"--nproc {nproc} --device cuda: this machine has {torch.cuda.device_count()} GPUs"
        )
    check_inputs(config, data_root)
    launch(nproc, _without_nproc(sys.argv[1:]))


def _without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
def validate(pipeline):
    """Check PIPELINE without running it (exit status 2 on the first problem)."""
    from compress.config import load_pipeline
    from compress.pipeline import check_pipeline

    config = load_pipeline(pipeline)
    check_pipeline(config)
    click.echo(
        f"{pipeline}: ok ({config.name}: {config.model.name or config.model.class_name} "
        f"on {config.data.name})"
    )


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--wide",
    is_flag=True,
    help=(
        "Table: every column, however wide the terminal [default: the main columns, fitted to it]."
    ),
)
@click.option(
    "--memory",
    is_flag=True,
    help=(
        "Per node, in file order: the activation bytes alive at batch 1 and the weights "
        "each reads, the peak marked (every artifact, or --artifact)."
    ),
)
@click.option("--artifact", metavar="NAME", help="With --memory: only this artifact.")
@click.option(
    "--device-timings",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A timings.json written by a bundle's bench.py: its latencies beside the host's.",
)
@click.option(
    "--layers",
    is_flag=True,
    help='Each layer\'s width in the packed files instead (bits = "auto": with its evidence), '
    'and each layer\'s int8 and float timing in static files with static_layers = "faster".',
)
def report(run_dir, fmt, wide, memory, artifact, device_timings, layers):
    """Print the table of a finished run folder.

    The table fits the terminal (COLUMNS, else its width, else 80): the main columns, fewer
    on a narrower one; --wide, md and csv have them all.
    """
    import json

    from compress.report import (
        format_csv,
        format_layers,
        format_markdown,
        format_table,
        layer_rows,
        load_report,
        memory_lines,
    )
    from compress.tables import terminal_width

    if layers:
        load_report(run_dir)  # a finished run folder
        if fmt == "json":
            click.echo(json.dumps(layer_rows(run_dir), indent=2))
        else:
            click.echo(format_layers(run_dir, fmt).rstrip("\n"))
        return
    data = load_report(run_dir)
    if memory:
        click.echo("\n".join(memory_lines(data, run_dir, artifact)))
        return
    if device_timings is not None:
        from compress import tables
        from compress.bundle import device_rows, device_title, read_timings

        timings = read_timings(device_timings)
        headers, rows = device_rows(data, timings)
        click.echo(f"{data['pipeline']}: latency at batch 1, host and {device_title(timings)}")
        click.echo("\n".join(tables.text(headers, rows, left=[True] + [False] * 4)))
        return
    width = None if wide else terminal_width()
    text = {
        "table": lambda r: format_table(r, width),
        "md": format_markdown,
        "csv": format_csv,
        "json": lambda r: json.dumps(r, indent=2),
    }[fmt](data)
    click.echo(text.rstrip("\n"))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The archive, .zip or .tar.gz [default: <run folder>-bundle.zip beside it].",
)
def bundle(run_dir, out):
    """Pack a finished run's ONNX files and a benchmark script (numpy and onnxruntime only)
    into one archive, to time them on a device as verify does."""
    from compress.bundle import write_bundle

    path = write_bundle(run_dir, out)
    click.echo(f"{path}: unpack it on the device and run python3 <folder>/bench.py -o timings.json")


@main.command()
def models():
    """List the models a pipeline can name in [model] name."""
    from compress.registry import describe, list_families, list_models

    for name, factory in list_models().items():
        click.echo(f"{name:20s} {describe(factory)}")
    for prefix, resolve in list_families().items():
        click.echo(f"{prefix + ':<name>':20s} {describe(resolve)}")


@main.command()
def methods():
    """List the pruning methods a pipeline can name in [prune] method."""
    from compress.pruning.registry import list_methods

    for name, method in list_methods().items():
        low, high = method.tune_range
        kind = "structured" if method.structured else "unstructured"
        click.echo(
            f"{name:12s} {kind:12s} prunes more as {method.strength} grows "
            f"(tune range {low:g}..{high:g})"
        )


@main.command()
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--baseline",
    metavar="NAME",
    help="What Δ pts and ratio compare with: ARTIFACT (each run's own), RUN (that run's dense) "
    "or RUN:ARTIFACT [default: each run's own dense].",
)
@click.option(
    "--sort",
    type=click.Choice(["run", "size", "accuracy"]),
    default="run",
    show_default=True,
    help="run: grouped by run, in the order given; size: smallest deploy first; "
    "accuracy: most accurate first.",
)
def compare(run_dirs, fmt, baseline, sort):
    """Print the artifacts of several finished run folders side by side (reads report.json)."""
    from compress.analysis.compare import comparison_rows, format_comparison, load_runs

    rows = comparison_rows(load_runs(list(run_dirs)), baseline=baseline, sort=sort)
    click.echo(format_comparison(rows, fmt, sort).rstrip("\n"))


def _device_limit_options(f):
    """--max-flash, --max-ram, --max-activation (KB of 1024 bytes) and --max-latency-vs-dense:
    device limits a chosen artifact must be within too (compress.budget)."""
    for name, what in reversed(
        [
            ("--max-flash", "KB: the .onnx file (flash_bytes)."),
            ("--max-ram", "KB: weights held + activation peak at batch 1 (ram_bytes)."),
            ("--max-activation", "KB: the activation peak at batch 1 (peak_activation_bytes)."),
            ("--max-latency-vs-dense", "p50 latency as a multiple of dense's (latency_vs_dense)."),
        ]
    ):
        f = click.option(
            name,
            type=click.FloatRange(min=0, min_open=True),
            help=f"Device limit, {what} Trials beyond it are infeasible.",
        )(f)
    return f


def _device_limits(limits: dict):
    """Limits from the --max-* device options; None when none is given."""
    from compress.budget import Limits

    found = Limits(
        flash_kb=limits.get("max_flash"),
        ram_kb=limits.get("max_ram"),
        activation_kb=limits.get("max_activation"),
        latency_vs_dense=limits.get("max_latency_vs_dense"),
    )
    return found if found.any() else None


def _cache_option(f):
    return click.option(
        "--cache",
        "cache_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Stage cache shared by the runs (and with other sweeps) [default: OUT/cache].",
    )(f)


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Values to try for a dotted key, as TOML literals, e.g. prune.amount=0.9,0.95 or "
    '\'quantize.variants=["dynamic"],["static"]\'. Repeat for more keys; adds to [sweep].',
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Sweep folder: one run folder per variant [default: runs/<pipeline name>-sweep].",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Variants run at once, each in its own process (torch threads shared out).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run each variant as a Ray task: 'local' starts a cluster here, 'auto' or host:port "
    "joins one (needs pip install 'compress[ray]').",
)
@click.option(
    "--max-drop",
    type=float,
    metavar="PTS",
    help="Accuracy budget in points below the dense model of the pipeline as written, on the "
    "validation split: name the smallest artifact within it.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=(
        "CPU threads per variant [default: torch's choice; with --jobs, the CPUs shared out "
        "among them]."
    ),
)
@data_root_option
@device_option("Where to train.")
@_cache_option
def sweep(
    pipeline, sets, out_dir, jobs, ray_address, max_drop, threads, data_root, device, cache_dir
):
    """Run every combination of settings of PIPELINE and find the size/accuracy frontier.

    Variants share the stages they have in common (training runs once when only later
    settings vary). Δ pts is against the dense model of the pipeline as written, on the
    validation split (a variant makes it, or it runs once as OUT/reference). Writes
    OUT/sweep.json, sweep.md and sweep.png (validation accuracy against deploy bytes,
    Pareto frontier drawn).
    """
    from compress.analysis.sweep import (
        bar_sentence,
        budget_sentence,
        format_points,
        frontier_rows,
        reuse_sentence,
        run_sweep,
        sweep_axes,
    )
    from compress.config import load_pipeline

    config = load_pipeline(pipeline)
    axes = sweep_axes(config, list(sets))
    out = out_dir or Path("runs") / f"{config.name}-sweep"
    summary = run_sweep(
        pipeline,
        axes,
        out,
        data_root=data_root,
        jobs=jobs,
        ray_address=ray_address,
        max_drop=max_drop,
        cache_dir=cache_dir,
        device=device,
        threads=threads,
    )
    click.echo(f"Pareto frontier of {summary['pipeline']} ({bar_sentence(summary)}):")
    click.echo(format_points(frontier_rows(summary)))
    click.echo("")
    click.echo(reuse_sentence(summary))
    if summary["budget"] is not None:
        click.echo(budget_sentence(summary["budget"], summary["points"]))
    click.echo(f"sweep: {out / 'sweep.md'}, {out / 'sweep.png'}, {out / 'sweep.json'}")
    if summary["failed"]:
        click.echo(f"error: verification failed for {', '.join(summary['failed'])}", err=True)
        sys.exit(1)


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--max-drop",
    type=float,
    required=True,
    metavar="PTS",
    help="Accuracy budget: points the best artifact may lose against the dense model of the "
    "pipeline as written (with --set), on the validation split.",
)
@click.option(
    "--param",
    metavar="KEY",
    help="The setting searched [default: the method's strength, e.g. prune.amount for magnitude, "
    "prune.threshold for threshold; see `compress methods`].",
)
@click.option("--low", type=float, help="Low end of the search [default: the method's tune range].")
@click.option(
    "--high", type=float, help="High end of the search [default: the method's tune range]."
)
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Bisection steps after the two ends.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A fixed change to the pipeline for every point, e.g. finetune.epochs=1.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Tune folder: one run folder per point [default: runs/<pipeline name>-tune].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for every point [default: torch's choice]; 1 is fastest on a machine busy "
    "with other work.",
)
@data_root_option
@device_option("Where to train.")
@_cache_option
@_device_limit_options
def tune(
    pipeline,
    max_drop,
    param,
    low,
    high,
    steps,
    sets,
    out_dir,
    threads,
    data_root,
    device,
    cache_dir,
    **limits,
):
    """Find the highest sparsity of PIPELINE whose best artifact stays within --max-drop.

    Bisection over one pruning setting; every point is a run folder sharing one stage
    cache, so training runs once. Δ pts is against the dense model of the pipeline as
    written, on the validation split. Writes OUT/tune.json and tune.md.
    """
    from compress.analysis.tune import format_table
    from compress.analysis.tune import tune as run_tune
    from compress.analysis.variants import parse_set
    from compress.config import load_pipeline

    fixed = {}
    for spec in sets:
        key, values = parse_set(spec)
        if len(values) != 1:
            raise CompressError(f"--set {spec}: tune takes one value per key (sweep takes several)")
        fixed[key] = values[0]
    config = load_pipeline(pipeline)
    out = out_dir or Path("runs") / f"{config.name}-tune"
    result = run_tune(
        pipeline,
        max_drop,
        out,
        param=param,
        low=low,
        high=high,
        steps=steps,
        data_root=data_root,
        cache_dir=cache_dir,
        fixed=fixed,
        device=device,
        threads=threads,
        limits=_device_limits(limits),
    )
    click.echo(format_table(result))
    click.echo(f"tune: {out / 'tune.md'}, {out / 'tune.json'}")


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=SPACE",
    help="A setting to search: (low,high) uniform, log(low,high), int(low,high) or a TOML list of "
    "choices, e.g. 'train.l1.lambda=log(1e-5,1e-3)'. Repeat for more keys; adds to [search].",
)
@click.option(
    "--max-drop",
    type=float,
    metavar="PTS",
    help="Accuracy budget in points below the dense model of the pipeline as written, on the "
    "validation split (needed by --objective size and latency).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Trials in the study (a rerun after Ctrl-C runs only the missing ones).",
)
@click.option(
    "--objective",
    type=click.Choice(["size", "pareto", "latency"]),
    default="size",
    show_default=True,
    help="size: smallest deploy size within --max-drop (TPE); latency: fastest against dense "
    "within --max-drop (TPE); pareto: the front of deploy size against validation accuracy "
    "(NSGA-II).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=(
        "Search folder: the study, one run folder per trial [default: runs/<pipeline name>-search]."
    ),
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials run at once, each in its own process or Ray task (torch threads shared out).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run each trial as a Ray task: 'local' starts a cluster here, 'auto' or host:port "
    "joins one (needs pip install 'compress[ray]').",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads per trial [default: 1 on 2 CPUs or fewer, else the idle CPUs shared out "
    "among --jobs, at most 4 each].",
)
@click.option(
    "--storage",
    metavar="URL",
    help="Optuna storage several `compress search` processes (on one or more machines) share: "
    "a journal file on a shared folder (journal:///path/study.log or a path) or a database "
    "URL (sqlite:///..., postgresql://...) [default: OUT/study.journal].",
)
@data_root_option
@device_option("Where to train.")
@_cache_option
@_device_limit_options
def search(
    pipeline,
    params,
    max_drop,
    trials,
    objective,
    out_dir,
    jobs,
    ray_address,
    threads,
    data_root,
    device,
    cache_dir,
    **options,  # --seed and --storage (where the study lives, how it samples); device limits
):
    """Search settings of PIPELINE (say L1 strength and pruning threshold together) with Optuna.

    Every decision is made on the validation split; test accuracy of the chosen artifacts
    is reported at the end only. Trials share stages through the stage cache; the study is
    kept in OUT/study.journal, so the same command after Ctrl-C continues it. Writes
    OUT/search.json, search.md, search-history.png and search-front.png.
    """
    from dataclasses import replace

    from compress.analysis.search import StudyOptions, run_search
    from compress.analysis.search_report import format_table
    from compress.analysis.space import search_spaces
    from compress.config import load_pipeline
    from compress.threads import default_threads

    study = StudyOptions(options.pop("seed"), options.pop("storage"))
    config = load_pipeline(pipeline)
    spaces = search_spaces(config, list(params))
    out = out_dir or Path("runs") / f"{config.name}-search"
    device_limits = _device_limits(options)
    if device_limits is not None:  # the accuracy budget travels with them
        device_limits = replace(device_limits, max_drop=max_drop)
    summary = run_search(
        pipeline,
        spaces,
        out,
        max_drop=max_drop if device_limits is None else device_limits,
        trials=trials,
        objective=objective,
        jobs=jobs,
        ray_address=ray_address,
        data_root=data_root,
        cache_dir=cache_dir,
        device=device,
        threads=threads or default_threads(jobs),
        options=study,
    )
    click.echo(format_table(summary))
    click.echo(f"search: {out / 'search.md'}, {out / 'search-front.png'}, {out / 'search.json'}")


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--levels",
    default="0.5,0.7,0.8,0.9,0.95,0.97,0.98,0.99",
    show_default=True,
    help="Comma-separated sparsity levels to try on each layer.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=(
        "Run folder whose trained model to use (trained there if missing) [default: "
        "runs/<pipeline name>]."
    ),
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for training and the evaluations [default: torch's choice]; 1 is fastest on "
    "a machine busy with other work.",
)
@data_root_option
@device_option("Where to train if the trained model is not there yet.")
def sensitivity(pipeline, levels, out_dir, threads, data_root, device):
    """Prune each layer alone at several levels and report accuracy against sparsity.

    Uses the pipeline's trained model (the train stage runs first if it is not finished),
    prints a table of accuracy drops and writes sensitivity.json/.md/.png under
    RUN_DIR/sensitivity/: a guide for per-layer targets in [prune] overrides.
    """
    from compress.analysis.sensitivity import (
        format_sensitivity,
        layer_sensitivity,
        write_sensitivity,
    )
    from compress.checkpoint import load_checkpoint
    from compress.config import load_pipeline
    from compress.data import load_data
    from compress.pipeline import run_pipeline

    try:
        level_values = [float(v) for v in levels.split(",") if v.strip()]
    except ValueError:
        raise CompressError(
            f"--levels {levels!r}: expected comma-separated numbers such as 0.5,0.9"
        ) from None
    if not level_values or not all(0 < v < 1 for v in level_values):
        raise CompressError(f"--levels {levels!r}: each level must be between 0 and 1 (exclusive)")
    config = load_pipeline(pipeline)
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_dir = out_dir or Path("runs") / config.name
    run_pipeline(
        config,
        out_dir=run_dir,
        data_root=data_root,
        device=device,
        progress=sys.stderr.isatty(),
        until="train",
    )
    model, _, _ = load_checkpoint(run_dir / "train" / "model.pt")
    data = load_data(config.data, config.base_dir, data_root)
    result = layer_sensitivity(model, data, sorted(level_values), config.data.eval_batch_size)
    write_sensitivity(
        run_dir / "sensitivity", result, f"{config.name}: pruning sensitivity per layer"
    )
    click.echo(format_sensitivity(result))
    click.echo(f"\nplot: {run_dir / 'sensitivity' / 'sensitivity.png'}")
