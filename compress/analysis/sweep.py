"""Sweeps: run every combination of some settings of a pipeline, sharing the stages they
have in common, and find the size/accuracy Pareto frontier.

    axes = {"prune.threshold": [0.02, 0.03], "quantize.variants": [["dynamic"], ["static"]]}
    result = run_sweep("pipelines/mnist.toml", axes, out_dir="runs/sweep", jobs=2)
    result["frontier"], result["budget"]

Each variant is one run folder `<out>/<variant>/` (its own report.json); all of them share
the stage cache `<out>/cache` (compress.cache), so variants that differ only in prune or
quantize settings train once. This module ties the parts together and writes the output;
the parts are compress.analysis.variants (`--set` values and the variants they make),
compress.analysis.runner (variants in this process, in `jobs` worker processes, or as Ray
tasks) and compress.analysis.pareto (points, frontier, budget). sweep.json is typed in
compress.results (Sweep).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compress import tables
from compress.analysis.pareto import (
    best_within_budget,
    collect_points,
    dominates,
    meets_budget,
    pareto_frontier,
    within_budget,
)
from compress.analysis.reference import BAR, REFERENCE, Reference, dense_val
from compress.analysis.runner import (
    RAY_HINT,
    TaskSettings,
    available_cpus,
    import_ray,
    run_task,
    run_tasks,
)
from compress.analysis.variants import (
    parse_literal,
    parse_set,
    plan_variants,
    short_value,
    split_top_level,
    sweep_axes,
    variant_names,
)
from compress.config import load_pipeline
from compress.files import write_json, write_text
from compress.results import FAILED, VAL, Sweep, status_kind

log = logging.getLogger(__name__)

__all__ = [  # the sweep's parts, importable from here as before the split
    "RAY_HINT",
    "available_cpus",
    "bar_sentence",
    "best_within_budget",
    "budget_sentence",
    "collect_points",
    "delta",
    "dominates",
    "format_markdown",
    "format_points",
    "frontier_rows",
    "import_ray",
    "pareto_frontier",
    "parse_literal",
    "parse_set",
    "plan_variants",
    "reuse_sentence",
    "run_sweep",
    "run_task",
    "run_tasks",
    "split_top_level",
    "summarize",
    "sweep_axes",
    "variant_names",
    "within_budget",
    "write_sweep",
]


def run_sweep(
    pipeline: str | Path,
    axes: dict[str, list[Any]],
    out_dir: str | Path,
    data_root: str | None = None,
    jobs: int = 1,
    ray_address: str | None = None,
    max_drop: float | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> Sweep:
    """Run every variant, then write `<out>/sweep.json`, `sweep.md` and `sweep.png`.

    Drops are against the dense model of the pipeline as written (compress.analysis.reference):
    a variant's own when it makes that model, else `<out>/reference`, run once."""
    from compress.pipeline import check_inputs

    pipeline = Path(pipeline).resolve()
    config = load_pipeline(pipeline)
    variants = plan_variants(config, axes)
    if ray_address is not None:
        import_ray()  # before any work: a missing Ray is a usage error
    data = check_inputs(config, data_root)  # data and model, once, before any folder is made
    settings = TaskSettings.of(
        pipeline, out_dir, data_root, cache_dir, device, threads, what="sweep variant"
    )
    out = Path(settings.out)
    reference = Reference(config, data)
    same = next(
        (v["name"] for v in variants if reference.made_by(config.with_overrides(v["overrides"]))),
        None,
    )
    runs = variants if same else [{"name": REFERENCE, "overrides": {}}, *variants]
    tasks = [settings.task(v["name"], v["overrides"]) for v in runs]
    log.info(
        "sweep of %s: %d variants into %s%s",
        config.name,
        len(variants),
        out,
        "" if same else ", and the pipeline as written as the reference",
    )
    results = run_tasks(tasks, jobs=jobs, ray_address=ray_address)
    ref_result = next(r for r in results if r["name"] == (same or REFERENCE))
    if not same:
        results = [r for r in results if r["name"] != REFERENCE]
    ref = {
        "run_dir": ref_result["run_dir"],
        "variant": same,
        "dense_val_accuracy": dense_val(ref_result["report"], ref_result["name"]),
    }
    summary = summarize(config.name, str(pipeline), axes, results, max_drop, ref)
    write_sweep(out, summary)
    return summary


def summarize(
    name: str,
    pipeline: str,
    axes: dict,
    results: list[dict],
    max_drop: float | None,
    reference: dict | None = None,
) -> Sweep:
    """`reference`: {run_dir, variant, dense_val_accuracy}, the bar of every drop (None:
    each variant's own dense model)."""
    bar = reference["dense_val_accuracy"] if reference else None
    points = collect_points(results, reference=bar)
    frontier = pareto_frontier(points)
    on_front = {p["label"] for p in frontier}
    for p in points:
        p["frontier"] = p["label"] in on_front
    stages = [s for r in results for s in r["report"]["stages"]]
    train_runs = sum(
        1
        for r in results
        for s in r["report"]["stages"]
        if s["name"] == "train" and not s["cached"]
    )
    budget = within_budget(points, max_drop) if max_drop is not None else None
    if budget is not None:
        for p in points:
            p["within_budget"] = p["status"] == "ok" and meets_budget(p, max_drop)
    return {
        "pipeline": name,
        "pipeline_file": pipeline,
        "axes": axes,
        "reference": reference,
        "variants": [
            {
                "name": r["name"],
                "overrides": r["overrides"],
                "run_dir": r["run_dir"],
                "stages_cached": [s["name"] for s in r["report"]["stages"] if s["cached"]],
                "dense_val_accuracy": r["report"]["training"]["dense_val_accuracy"],
            }
            for r in results
        ],
        "stages_total": len(stages),
        "stages_reused": sum(1 for s in stages if s["cached"]),
        "train_runs": train_runs,
        "points": points,
        "frontier": [p["label"] for p in frontier],
        "budget": budget,
        "failed": [p["label"] for p in points if status_kind(p) == FAILED],  # not warnings
    }


def bar_sentence(summary: dict) -> str:
    """What every Δ pts is measured against."""
    ref = summary.get("reference")
    if not ref:
        return "Δ pts against each variant's own dense model, on validation"
    where = f"variant {ref['variant']}" if ref["variant"] else f"run {Path(ref['run_dir']).name}/"
    return f"{BAR} ({ref['dense_val_accuracy']:.2%}, {where})"


def budget_sentence(budget: dict, points: list[dict]) -> str:
    by_label = {p["label"]: p for p in points}
    limit = f"{budget['max_drop']:g} pts"
    if budget["chosen"]:
        p = by_label[budget["chosen"]]
        text = (
            f"smallest within {limit} of the reference dense: {p['label']}, "
            f"{p['deploy_bytes']:,} deploy bytes, "
            f"{p[VAL]:.2%} ({delta(p['drop'])} pts)"
        )
        if budget["ties"]:
            text += f"; tied with {', '.join(budget['ties'])}"
        return text
    if budget["closest"]:
        p = by_label[budget["closest"]]
        return (
            f"nothing meets the budget: no compressed artifact is within {limit} of the reference "
            f"dense; the closest, {p['label']}, is {p['drop']:.2f} pts below "
            f"({p[VAL]:.2%}, {p['deploy_bytes']:,} bytes)"
        )
    return "nothing meets the budget: no compressed artifact was verified"


def reuse_sentence(summary: dict) -> str:
    n = len(summary["variants"])
    return (
        f"{n} variants: reused {summary['stages_reused']} of {summary['stages_total']} stages; "
        f"training ran in {summary['train_runs']} of {n} variants"
    )


def frontier_rows(summary: dict) -> list[dict]:
    by_label = {p["label"]: p for p in summary["points"]}
    return [by_label[label] for label in summary["frontier"]]


def delta(drop: float) -> str:
    """A drop in points as a signed change: 0.35 -> "-0.35" (never "-0.00")."""
    return f"{(0.0 - drop) + 0.0:+.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_points(points: list[dict], markdown: bool = False) -> str:
    headers = ["artifact", "val %", "Δ pts", "test %", "deploy", "ratio", "sparsity"]
    rows = [
        [
            p["label"],
            f"{p[VAL]:.2%}",
            delta(p["drop"]),
            _percent(p.get("test_accuracy")),
            f"{p['deploy_bytes']:,}",
            f"{p['compression']:.1f}x",
            f"{p['sparsity']:.1%}",
        ]
        for p in points
    ]
    return "\n".join(tables.markdown(headers, rows) if markdown else tables.text(headers, rows))


def format_markdown(summary: dict) -> str:
    out = [f"# Sweep of {summary['pipeline']}", ""]
    out += [
        f"- `{k}`: {', '.join(short_value(v) for v in values)}"
        for k, values in summary["axes"].items()
    ]
    out += ["", reuse_sentence(summary) + ".", ""]
    out += [
        "## Pareto frontier",
        "",
        "Smallest deploy size for each validation accuracy level: no other artifact is both "
        f"smaller and at least as accurate on the validation split. {bar_sentence(summary)}; the "
        "test split is only reported.",
        "",
    ]
    out += [format_points(frontier_rows(summary), markdown=True), ""]
    if summary["budget"] is not None:
        out += [
            "## Accuracy budget",
            "",
            budget_sentence(summary["budget"], summary["points"]) + ".",
            "",
        ]
    out += ["![accuracy against deploy size](sweep.png)", "", "## All artifacts", ""]
    budget = summary["budget"]
    headers = [
        "variant(s)",
        "artifact",
        "val %",
        "Δ pts",
        "test %",
        "deploy bytes",
        "ratio",
        "sparsity",
        "frontier",
    ]
    headers += [f"within {budget['max_drop']:g} pts"] if budget else []
    rows = []
    for p in sorted(summary["points"], key=lambda p: (p["deploy_bytes"], -p[VAL])):
        variants = "all" if p["label"] == p["artifact"] else ", ".join(p["variants"])
        artifact = p["artifact"] + ("" if p["status"] == "ok" else f" ({p['status']})")
        cells = [
            variants,
            artifact,
            f"{p[VAL]:.2%}",
            delta(p["drop"]),
            _percent(p.get("test_accuracy")),
            f"{p['deploy_bytes']:,}",
            f"{p['compression']:.1f}x",
            f"{p['sparsity']:.1%}",
            "yes" if p["frontier"] else "",
        ]
        if budget:
            cells.append(
                "smallest"
                if p["label"] == budget["chosen"]
                else "yes"
                if p["within_budget"]
                else ""
            )
        rows.append(cells)
    out += tables.markdown(headers, rows)
    return "\n".join(out) + "\n"


def write_sweep(out: Path, summary: Sweep) -> None:
    from compress.analysis.plot import plot_tradeoff

    write_json(out / "sweep.json", summary)
    write_text(out / "sweep.md", format_markdown(summary))
    chosen = summary["budget"]["chosen"] if summary["budget"] else None
    line, label = None, "accuracy budget"
    if summary["budget"] and summary.get("reference"):  # the bar every drop is measured against
        reference, max_drop = (
            summary["reference"]["dense_val_accuracy"],
            summary["budget"]["max_drop"],
        )
        line = reference - max_drop / 100
        label = f"budget: the pipeline's dense {reference:.2%} - {max_drop:g} pts"
    plot_tradeoff(
        summary["points"],
        summary["frontier"],
        out / "sweep.png",
        title=f"{summary['pipeline']}: validation accuracy against deploy size",
        chosen=chosen,
        budget_line=line,
        budget_label=label,
    )
