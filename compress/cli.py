"""Command line: `compress run|validate|report|models`.

A thin click layer over the library: user mistakes (CompressError) print one line and exit
with status 2; Ctrl-C exits 130 and a rerun of the same command resumes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from compress import __version__
from compress.errors import CompressError

log = logging.getLogger("compress")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("onnxruntime", "onnxscript", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class CompressGroup(click.Group):
    """Turns CompressError into a one-line message and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CompressError as exc:
            click.echo(f"error: {' '.join(str(exc).splitlines())}", err=True)  # one line
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("\ninterrupted; run the same command again to resume (finished stages are kept)", err=True)
            sys.exit(130)


@click.group(cls=CompressGroup)
@click.version_option(__version__, prog_name="compress")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, prune, fine-tune, quantize, export and verify a model as small ONNX artifacts.

    A pipeline TOML file describes the run; see pipelines/ and README.md.
    """
    _setup_logging(verbose)


@main.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder [default: runs/<pipeline name>].")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Folder holding the data set's IDX files (overrides [data] root).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where to train; ONNX artifacts are always verified on the CPU.")
@click.option("--force", is_flag=True, help="Run every stage again, ignoring the cache.")
@click.option("--from", "from_stage", metavar="STAGE",
              help="Run this stage and the ones after it again (train, prune, finetune, export, quantize, verify).")
@click.option("--no-progress", is_flag=True, help="No progress bars (the log still shows each epoch).")
def run(pipeline, out_dir, data_root, device, force, from_stage, no_progress):
    """Run PIPELINE (a .toml file) and print the size/accuracy/latency table.

    Finished stages are reused when their settings are unchanged; the run folder keeps
    checkpoints, ONNX artifacts and report.json/.md/.csv.
    """
    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline
    from compress.report import format_table

    config = load_pipeline(pipeline)
    report = run_pipeline(
        config, out_dir=out_dir, data_root=data_root, device=device, force=force,
        from_stage=from_stage, progress=not no_progress and sys.stderr.isatty(),
    )
    click.echo(format_table(report))
    run_dir = out_dir or Path("runs") / config.name
    click.echo(f"\nreport: {run_dir / 'report.md'} ({report['total_seconds']:.1f}s of work)")
    failed = [a["name"] for a in report["artifacts"] if a["status"] != "ok"]
    if failed:
        click.echo(f"error: verification failed for {', '.join(failed)}", err=True)
        sys.exit(1)


@main.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
def validate(pipeline):
    """Check PIPELINE without running it (exit status 2 on the first problem)."""
    from compress.config import load_pipeline
    from compress.pipeline import check_pipeline

    config = load_pipeline(pipeline)
    check_pipeline(config)
    click.echo(f"{pipeline}: ok ({config.name}: {config.model.name or config.model.class_name} on {config.data.name})")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
def report(run_dir, fmt):
    """Print the table of a finished run folder."""
    import json

    from compress.report import format_csv, format_markdown, format_table, load_report

    data = load_report(run_dir)
    text = {"table": format_table, "md": format_markdown, "csv": format_csv,
            "json": lambda r: json.dumps(r, indent=2)}[fmt](data)
    click.echo(text.rstrip("\n"))


@main.command()
def models():
    """List the models a pipeline can name in [model] name."""
    from compress.registry import describe, list_models

    for name, factory in list_models().items():
        click.echo(f"{name:12s} {describe(factory)}")
