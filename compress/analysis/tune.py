"""Tune: the highest sparsity whose best artifact stays within an accuracy budget.

    result = tune("pipelines/mnist.toml", max_drop=0.1, out_dir="runs/tune-mnist")
    result["chosen"], result["points"]

Bisection over one pruning setting, assumed to remove more weights as it grows: the
pruning method's `strength` (compress.pruning: `prune.amount` for magnitude,
`prune.threshold` for threshold), or any dotted key with `param`. The high end is tried
first (if it meets the budget, it is the answer), then the low end (if that misses, nothing
in the range meets it), then `steps` midpoints, geometric where the method says so
(thresholds), arithmetic otherwise.

Per-layer `[prune] overrides` follow the searched value (PruningMethod.scale_override):
for a fraction such as `prune.amount = a`, a layer whose override was `o` (against the
file's amount `a0`) keeps the fraction (1 - o) * (1 - a) / (1 - a0) of its weights, so every
layer's density is scaled by the same factor and the file's own setting is one point of the
search; other settings are scaled in proportion, o * a / a0.

A point meets the budget when one of its artifacts other than `dense` is at most
`max_drop` points below the dense model of the pipeline as written (with the `--set`
changes every point has), on the validation split (the test split is only reported): a
point that changes training cannot lower its own bar (compress.analysis.reference). That
model is the points' own when they train it alike (the usual case: a pruning setting);
otherwise the pipeline runs once first as `<out>/reference`. Every point is one run folder
`<out>/<param>-<value>/` sharing the stage cache `<out>/cache`, so training runs once.
A point's best artifact follows the budget rule of sweep and search
(compress.analysis.pareto.best_within_budget); tune.json is typed in compress.results (Tune).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compress import tables
from compress.analysis.pareto import best_within_budget, device_misses
from compress.analysis.reference import BAR, REFERENCE, Reference, dense_val
from compress.analysis.runner import Runner, TaskSettings
from compress.analysis.sweep import delta
from compress.budget import DEVICE_KEYS, Limits
from compress.config import PipelineConfig, ignored_by, load_pipeline, pruning_method
from compress.errors import CompressError
from compress.files import write_json, write_text
from compress.results import (
    DENSE,
    TEST,
    VAL,
    Report,
    Tune,
    TunePoint,
    accuracy_points,
    baseline_of,
    drop_pts,
)

log = logging.getLogger(__name__)


def default_param(config: PipelineConfig) -> str:
    return f"prune.{pruning_method(config.prune.method).strength}"


def _searches_strength(config: PipelineConfig, param: str) -> bool:
    return param == default_param(config)


def point_overrides(config: PipelineConfig, param: str, value: float) -> dict[str, Any]:
    """The settings of one point: `param`, and the per-layer overrides scaled with it."""
    overrides: dict[str, Any] = {param: value}
    if _searches_strength(config, param) and config.prune.overrides:
        method = pruning_method(config.prune.method)
        base = getattr(config.prune, method.strength)
        layers = {}
        for layer, override in config.prune.overrides.items():
            scaled = method.scale_override(getattr(override, method.strength), base, value)
            layers[layer] = {
                **override.model_dump(exclude_none=True),
                method.strength: round(scaled, 6),
            }
        overrides["prune.overrides"] = layers
    return overrides


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def midpoint(low: float, high: float, geometric: bool) -> float:
    return _round(math.sqrt(low * high) if geometric and low > 0 else (low + high) / 2)


def evaluate_point(
    report: Report,
    max_drop: float,
    baseline: str = DENSE,
    reference: float | None = None,
    limits: Limits | None = None,
) -> dict:
    """The best artifact of one run: the smallest within budget (and the device `limits`,
    when given: flash, RAM, activation, latency), else the closest to it.

    Judged on the validation split (`val_accuracy`), against `reference` (the validation
    accuracy of the pipeline's dense model) or, without one, the run's own `baseline`;
    `test_accuracy` is only reported."""
    artifacts = report["artifacts"]
    base = baseline_of(artifacts, baseline)
    candidates = []
    for a in artifacts:
        if a["name"] == baseline or a["status"] != "ok":
            continue
        drop = (
            drop_pts(base, a, VAL)
            if reference is None
            else round(-accuracy_points(reference, a[VAL]), 4)
        )
        candidates.append(
            {
                "artifact": a["name"],
                VAL: a[VAL],
                "test_accuracy": a[TEST],
                "drop": drop,
                "deploy_bytes": a["deploy_bytes"],
                "sparsity": a["sparsity"],
                **{key: a.get(key) for key in DEVICE_KEYS},
            }
        )
        if limits is not None:
            candidates[-1]["misses"] = device_misses(candidates[-1], limits)
    best, meets, _ = best_within_budget(candidates, max_drop, baseline, limits)
    return {
        "dense_val_accuracy": base[VAL],
        "reference_val_accuracy": base[VAL] if reference is None else reference,
        "pruned_sparsity": report["training"]["pruned_sparsity"],
        "best": best,
        "meets": meets,
        "train_cached": next(s["cached"] for s in report["stages"] if s["name"] == "train"),
    }


def tune(
    pipeline: str | Path,
    max_drop: float,
    out_dir: str | Path,
    param: str | None = None,
    low: float | None = None,
    high: float | None = None,
    steps: int = 5,
    data_root: str | None = None,
    cache_dir: str | Path | None = None,
    fixed: dict[str, Any] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    limits: Limits | None = None,
) -> Tune:
    """Search, write `<out>/tune.json` and `tune.md`, and return the result.

    `threads`: torch threads for every point (None: torch's choice). `limits`: device
    limits (compress.budget) a point's best artifact must be within too, beside max_drop."""
    from compress.pipeline import check_inputs

    pipeline = Path(pipeline).resolve()
    config = load_pipeline(pipeline)
    if fixed:
        config = config.with_overrides(fixed)
    param = param or default_param(config)
    reason = ignored_by(config, param)
    if reason is not None:
        raise CompressError(
            f"--param {param}: the pipeline ignores it ({reason}), "
            "so every point would be the same run"
        )
    method = pruning_method(config.prune.method)
    default_low, default_high = (
        method.tune_range if _searches_strength(config, param) else (None, None)
    )
    low = default_low if low is None else low
    high = default_high if high is None else high
    if low is None or high is None:
        raise CompressError(
            f"--param {param}: give --low and --high (defaults exist for {default_param(config)})"
        )
    if not low < high:
        raise CompressError(f"--low {low:g} must be below --high {high:g}")
    if steps < 0:
        raise CompressError(f"--steps {steps}: give 0 or more")
    settings = TaskSettings.of(
        pipeline, out_dir, data_root, cache_dir, device, threads, what="tune point", overrides=fixed
    )
    out = Path(settings.out)
    short = param.split(".")[-1]
    for value in (low, high):  # every point's settings and folder name are valid before any work
        config.with_overrides(point_overrides(config, param, value))
        settings.run_dir(f"{short}-{value:g}")
    data = check_inputs(config, data_root)
    geometric = method.tune_geometric and _searches_strength(config, param)
    points: list[TunePoint] = []
    runner = Runner()  # one point after another in this process: each step needs the last

    def run(name: str, overrides: dict[str, Any]) -> dict:
        runner.submit(settings.task(name, overrides))
        return runner.wait()[0]["report"]

    # the bar: the dense model of the pipeline (with --set); the points' own if they make it
    reference = {"run_dir": None, "dense_val_accuracy": None}
    bar = Reference(config, data)
    if not all(
        bar.made_by(config.with_overrides(point_overrides(config, param, v))) for v in (low, high)
    ):
        log.info(
            "tune: %s changes the dense model; the pipeline runs first as %s", param, REFERENCE
        )
        reference = {
            "run_dir": str(out / REFERENCE),
            "dense_val_accuracy": dense_val(run(REFERENCE, {}), REFERENCE),
        }

    def try_value(value: float) -> TunePoint:
        name = f"{short}-{value:g}"
        run_dir = settings.run_dir(name)
        log.info("tune: %s = %g (point %d)", param, value, len(points) + 1)
        report = run(name, point_overrides(config, param, value))
        if reference["dense_val_accuracy"] is None:  # this point's dense model is the pipeline's
            reference.update(run_dir=str(run_dir), dense_val_accuracy=dense_val(report, name))
        point = {
            "value": value,
            "run_dir": str(run_dir),
            **evaluate_point(
                report, max_drop, reference=reference["dense_val_accuracy"], limits=limits
            ),
        }
        points.append(point)
        best = point["best"]
        log.info(
            "tune: %s = %g: sparsity %.2f%%, best %s %.2f%% (%+.2f pts), %s bytes: %s",
            param,
            value,
            100 * point["pruned_sparsity"],
            best and best["artifact"],
            100 * best[VAL] if best else float("nan"),
            -best["drop"] if best else float("nan"),
            f"{best['deploy_bytes']:,}" if best else "-",
            "meets" if point["meets"] else "misses",
        )
        return point

    high, low = _round(high), _round(low)
    # high end first (if it meets, it is the answer), then the low end (if it misses, nothing will)
    if not try_value(high)["meets"] and try_value(low)["meets"]:
        lo, hi = low, high
        for _ in range(steps):
            mid = midpoint(lo, hi, geometric)
            if mid in (lo, hi):
                break
            if try_value(mid)["meets"]:
                lo = mid
            else:
                hi = mid
    result = summarize(config.name, str(pipeline), param, (low, high), max_drop, points)
    result.update(_settings_of(fixed, reference, limits))
    write_json(out / "tune.json", result)
    write_text(out / "tune.md", format_markdown(result))
    return result


def _settings_of(fixed: dict | None, reference: dict, limits: Limits | None) -> dict:
    """tune.json's `fixed`, `reference` and, with device limits, `limits`."""
    out = {"fixed": dict(fixed or {}), "reference": reference}
    if limits is not None:
        out["limits"] = {k: v for k, v in asdict(limits).items() if v is not None}
    return out


def summarize(
    name: str,
    pipeline: str,
    param: str,
    bounds: tuple[float, float],
    max_drop: float,
    points: list[dict],
) -> dict:
    meeting = [p for p in points if p["meets"]]
    chosen = None
    ties: list[float] = []
    notes: list[str] = []
    if meeting:
        best = max(
            meeting,
            key=lambda p: (
                round(p["pruned_sparsity"], 4),
                -p["best"]["deploy_bytes"],
                p["best"][VAL],
            ),
        )
        chosen = best["value"]
        ties = [
            p["value"]
            for p in meeting
            if p is not best and round(p["pruned_sparsity"], 4) == round(best["pruned_sparsity"], 4)
        ]
        if chosen == bounds[1]:
            notes.append(
                f"the high end ({param} = {bounds[1]:g}) meets the budget: "
                "raise --high to look further"
            )
        misses_below = [p["value"] for p in points if not p["meets"] and p["value"] < chosen]
        if misses_below:
            notes.append(
                f"accuracy was not monotonic: {', '.join(f'{v:g}' for v in misses_below)} "
                f"missed the budget below the chosen {chosen:g}"
            )
    elif points:
        notes.append(
            f"nothing meets the budget: even {param} = {bounds[0]:g} "
            f"drops more than {max_drop:g} pts"
        )
    return {
        "pipeline": name,
        "pipeline_file": pipeline,
        "param": param,
        "low": bounds[0],
        "high": bounds[1],
        "max_drop": max_drop,
        "points": points,
        "chosen": chosen,
        "ties": ties,
        "notes": notes,
        "train_runs": sum(1 for p in points if not p["train_cached"]),
    }


def bar_sentence(result: dict) -> str:
    """What every Δ pts is measured against."""
    ref = result.get("reference") or {}
    if ref.get("dense_val_accuracy") is None:
        return BAR
    return f"{BAR} ({ref['dense_val_accuracy']:.2%}, in {ref['run_dir']})"


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    headers = [
        result["param"],
        "sparsity",
        "best artifact",
        "val %",
        "Δ pts",
        "deploy",
        "test %",
        "budget",
    ]
    rows = []
    for p in sorted(result["points"], key=lambda p: p["value"]):
        b = p["best"]
        mark = "meets" if p["meets"] else "misses"
        if p["value"] == result["chosen"]:
            mark += " (chosen)"
        rows.append(
            [
                f"{p['value']:g}",
                f"{p['pruned_sparsity']:.2%}",
                b["artifact"] if b else "-",
                f"{b[VAL]:.2%}" if b else "-",
                delta(b["drop"]) if b else "-",
                f"{b['deploy_bytes']:,}" if b else "-",
                f"{b['test_accuracy']:.2%}" if b and b.get("test_accuracy") is not None else "-",
                mark,
            ]
        )
    return headers, rows


def chosen_sentence(result: dict) -> str:
    if result["chosen"] is None:
        return result["notes"][0] if result["notes"] else "no point was tried"
    p = next(p for p in result["points"] if p["value"] == result["chosen"])
    b = p["best"]
    text = (
        f"chosen: {result['param']} = {result['chosen']:g}, sparsity {p['pruned_sparsity']:.2%}, "
        f"{b['artifact']} validation {b[VAL]:.2%} ({delta(b['drop'])} pts against the reference "
        f"dense {p['reference_val_accuracy']:.2%}), {b['deploy_bytes']:,} deploy bytes, "
        f"in {p['run_dir']}"
    )
    if result["ties"]:
        text += f"; tied on sparsity with {', '.join(f'{v:g}' for v in result['ties'])}"
    return text


def training_sentence(result: dict) -> str:
    n, runs = len(result["points"]), result["train_runs"]
    text = f"{n} points; training ran in {runs} of them"
    return text + (
        ", the others reused it from the stage cache"
        if runs
        else " (all reused it from the stage cache)"
    )


def format_table(result: dict) -> str:
    headers, rows = _rows(result)
    # the value, the artifact and the budget read as words; the numbers line up on the right
    table = tables.text(
        headers, rows, left=[True, False, True, False, False, False, False, True], strip=True
    )
    fixed = ", ".join(f"{k}={v!r}" for k, v in result.get("fixed", {}).items())
    lines = [
        f"tune {result['pipeline']}: highest {result['param']} "
        f"in [{result['low']:g}, {result['high']:g}] "
        f"within {result['max_drop']:g} pts of the reference dense"
        + (f" (with {fixed})" if fixed else ""),
        f"({bar_sentence(result)})",
        *table,
        "",
        chosen_sentence(result),
    ]
    lines += [n for n in result["notes"] if n != chosen_sentence(result)]
    lines.append(training_sentence(result))
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    headers, rows = _rows(result)
    out = [
        f"# Tune {result['pipeline']}",
        "",
        f"Highest `{result['param']}` in [{result['low']:g}, {result['high']:g}] "
        "whose best artifact (the smallest within budget) "
        f"is at most {result['max_drop']:g} pts below the reference dense model "
        f"on the validation split; {bar_sentence(result)} (val %; test % is only reported). "
        "Sparsity: zeros among the pruned layers' weights.",
        "",
    ]
    if result.get("fixed"):
        out += [
            "Every point with "
            + ", ".join(f"`{k} = {v!r}`" for k, v in result["fixed"].items())
            + ".",
            "",
        ]
    out += tables.markdown(headers, rows)
    out += ["", chosen_sentence(result) + "."]
    out += [f"- {n}" for n in result["notes"] if n != chosen_sentence(result)]
    out.append(f"\n{training_sentence(result)}.")
    return "\n".join(out) + "\n"
