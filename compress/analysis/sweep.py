"""Sweeps: run every combination of some settings of a pipeline, sharing the stages they
have in common, and find the size/accuracy Pareto frontier.

    axes = {"prune.threshold": [0.02, 0.03], "quantize.variants": [["dynamic"], ["static"]]}
    result = run_sweep("pipelines/mnist.toml", axes, out_dir="runs/sweep", jobs=2)
    result["frontier"], result["budget"]

Each variant is one run folder `<out>/<variant>/` (its own report.json); all of them share
the stage cache `<out>/cache` (compress.cache), so variants that differ only in prune or
quantize settings train once. Values are TOML literals: `--set prune.amount=0.9,0.95`,
`--set 'quantize.variants=["dynamic"],["static"]'`. Variants run in this process, in
`jobs` worker processes, or as Ray tasks (`ray_address`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from compress.config import PipelineConfig, ignored_by, load_pipeline
from compress.errors import CompressError
from compress.files import write_json, write_text

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'compress[ray]'"


# ---------------------------------------------------------------- settings and variants


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_literal(text: str) -> Any:
    """A TOML literal (number, string, boolean, array, inline table); a bare word such as
    `dense` is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.+-]*", text):
            return text
        raise CompressError(f"{text!r} is not a TOML value (numbers, \"strings\", true/false, [arrays])") from None


def parse_set(spec: str) -> tuple[str, list[Any]]:
    """`prune.amount=0.9,0.95` -> ("prune.amount", [0.9, 0.95])."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise CompressError(f"--set {spec!r}: expected KEY=VALUE[,VALUE...], e.g. prune.amount=0.9,0.95")
    try:
        return key, [parse_literal(v) for v in split_top_level(values)]
    except CompressError as exc:
        raise CompressError(f"--set {spec!r}: {exc}") from None


def sweep_axes(config: PipelineConfig, sets: list[str] = ()) -> dict[str, list[Any]]:
    """The pipeline's [sweep] table, with --set options added (a --set replaces the same key)."""
    axes = {key: list(values) for key, values in config.sweep.items()}
    for spec in sets:
        key, values = parse_set(spec)
        axes[key] = values
    if not axes:
        raise CompressError("nothing to sweep: give --set KEY=VALUES or a [sweep] table in the pipeline file")
    return axes


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(_short(v) for v in value) or "none"
    if isinstance(value, dict):
        return "+".join(f"{k}{_short(v)}" for k, v in value.items()) or "none"
    return str(value)


def variant_names(combos: list[dict[str, Any]], axes: dict[str, list[Any]]) -> list[str]:
    """Folder names such as `threshold-0.02_variants-dynamic` (the last part of each key
    that varies; the whole key where two end alike), made unique."""
    varying = [k for k, v in axes.items() if len(v) > 1] or list(axes)
    lasts = [k.split(".")[-1] for k in varying]
    names, seen = [], {}
    for combo in combos:
        parts = []
        for key, last in zip(varying, lasts, strict=True):
            label = last if lasts.count(last) == 1 else key
            parts.append(f"{label}-{_short(combo[key])}")
        name = re.sub(r"[^A-Za-z0-9._+=-]", "", "_".join(parts)) or "variant"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def plan_variants(config: PipelineConfig, axes: dict[str, list[Any]]) -> list[dict]:
    """[{name, overrides}] for every combination; each is validated now, before any work."""
    keys = list(axes)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]
    variants, reasons = [], {key: set() for key in keys}
    for name, combo in zip(variant_names(combos, axes), combos, strict=True):
        try:
            variant = config.with_overrides(combo)
        except CompressError as exc:
            settings = ", ".join(f"{k}={v!r}" for k, v in combo.items())
            raise CompressError(f"variant {name} ({settings}): {exc}") from None
        for key in keys:
            reasons[key].add(ignored_by(variant, key))
        variants.append({"name": name, "overrides": combo})
    for key, why in reasons.items():
        if None not in why:  # no variant reads it: they would all be the same run
            raise CompressError(f"sweep over {key}: the pipeline ignores it ({sorted(why)[0]}), "
                                "so every variant would be the same run")
    return variants


# ---------------------------------------------------------------- running variants


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _quiet_worker_logging() -> None:
    """In a worker: INFO reaches each run's run.log, only warnings the terminal."""
    root = logging.getLogger()
    if not any(getattr(h, "_compress_worker", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._compress_worker = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("onnxruntime", "onnxscript", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _quiet_worker_logging()


def run_variant(task: dict) -> dict:
    """Run one variant (a plain dict in and out, so that it can cross processes and Ray)."""
    from compress.pipeline import run_pipeline

    if task.get("worker"):
        _init_worker(task["threads"])
    config = load_pipeline(task["pipeline"]).with_overrides({**task["overrides"], "sweep": {}})
    report = run_pipeline(
        config, out_dir=task["run_dir"], data_root=task["data_root"], device=task.get("device", "cpu"),
        progress=False, cache_dir=task["cache_dir"],
    )
    return {"name": task["name"], "overrides": task["overrides"], "run_dir": task["run_dir"], "report": report}


def import_ray():
    try:
        import ray
    except ImportError:
        raise CompressError(f"--ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


def run_tasks(tasks: list[dict], jobs: int = 1, ray_address: str | None = None) -> list[dict]:
    """Run variant tasks in order (jobs 1), in `jobs` processes, or as Ray tasks; results
    come back in the order of `tasks`. The first failure stops the sweep."""
    threads = max(1, available_cpus() // max(1, jobs))
    if ray_address is not None:
        return _run_ray(tasks, jobs, threads, ray_address)
    if jobs <= 1:
        results = []
        for i, task in enumerate(tasks, 1):
            log.info("variant %d/%d: %s", i, len(tasks), task["name"])
            results.append(run_variant(task))
        return results
    results: dict[str, dict] = {}
    # spawn: a fresh interpreter per worker (forking a process that has used torch's
    # thread pools can hang)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, {**t, "worker": True, "threads": threads}): t for t in tasks}
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result["name"]] = result
                log.info("variant %s done (%d/%d)", result["name"], len(results), len(tasks))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [results[t["name"]] for t in tasks]


def _run_ray(tasks: list[dict], jobs: int, threads: int, address: str) -> list[dict]:
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # "local" starts a private cluster of `jobs` CPUs on this machine; anything else
        # ("auto", "host:port", "ray://...") connects to a running one.
        options = {"num_cpus": max(1, jobs) * threads, "include_dashboard": False} if address == "local" else {}
        ray.init(address=address, log_to_driver=False, **options)
    try:
        remote = ray.remote(num_cpus=threads)(run_variant)
        refs = [remote.remote({**t, "worker": True, "threads": threads}) for t in tasks]
        log.info("submitted %d variants to Ray at %s", len(refs), address)
        return ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------- frontier and budget


def dominates(q: dict, p: dict) -> bool:
    """q is no larger and at least as accurate as p, and strictly better in one of them."""
    return (q["deploy_bytes"] <= p["deploy_bytes"] and q["accuracy"] >= p["accuracy"]
            and (q["deploy_bytes"] < p["deploy_bytes"] or q["accuracy"] > p["accuracy"]))


def pareto_frontier(points: list[dict]) -> list[dict]:
    """The points (with `deploy_bytes` and `accuracy`; failed ones ignored) that no other
    point dominates, smallest first: the smallest deploy size for each accuracy level."""
    ok = [p for p in points if p.get("status", "ok") == "ok"]
    front = [p for p in ok if not any(dominates(q, p) for q in ok if q is not p)]
    return sorted(front, key=lambda p: (p["deploy_bytes"], -p["accuracy"]))


def within_budget(points: list[dict], max_drop: float, baseline: str = "dense") -> dict:
    """The smallest artifact (other than the baseline) whose accuracy is at most `max_drop`
    points below its baseline's; `chosen` is None when none is, and `closest` then names
    the artifact with the smallest drop. Ties on size go to the more accurate."""
    compressed = [p for p in points if p["artifact"] != baseline and p.get("status", "ok") == "ok"]
    meets = [p for p in compressed if p["drop"] <= max_drop + 1e-9]
    result: dict[str, Any] = {"max_drop": max_drop, "chosen": None, "ties": [], "closest": None}
    if meets:
        chosen = min(meets, key=lambda p: (p["deploy_bytes"], -p["accuracy"], p["label"]))
        result["chosen"] = chosen["label"]
        result["ties"] = [p["label"] for p in meets if p is not chosen
                          and p["deploy_bytes"] == chosen["deploy_bytes"] and p["accuracy"] == chosen["accuracy"]]
    elif compressed:
        result["closest"] = min(compressed, key=lambda p: (p["drop"], p["deploy_bytes"]))["label"]
    return result


def budget_sentence(budget: dict, points: list[dict]) -> str:
    by_label = {p["label"]: p for p in points}
    limit = f"{budget['max_drop']:g} pts"
    if budget["chosen"]:
        p = by_label[budget["chosen"]]
        text = (f"smallest within {limit} of dense: {p['label']}, {p['deploy_bytes']:,} deploy bytes, "
                f"{p['accuracy']:.2%} ({delta(p['drop'])} pts)")
        if budget["ties"]:
            text += f"; tied with {', '.join(budget['ties'])}"
        return text
    if budget["closest"]:
        p = by_label[budget["closest"]]
        return (f"nothing meets the budget: no compressed artifact is within {limit} of dense; the closest, "
                f"{p['label']}, is {p['drop']:.2f} pts below ({p['accuracy']:.2%}, {p['deploy_bytes']:,} bytes)")
    return "nothing meets the budget: no compressed artifact was verified"


def collect_points(results: list[dict], baseline: str = "dense") -> list[dict]:
    """One point per distinct artifact of the variants (identical files shared by several
    variants, such as the common dense model, count once), with its drop in points
    against its own variant's baseline.

    A point's `accuracy` and `drop` are on the validation split: the frontier and the budget
    choose on them; `test_accuracy` is only reported."""
    points: dict[tuple, dict] = {}
    for result in results:
        artifacts = result["report"]["artifacts"]
        base = next((a for a in artifacts if a["name"] == baseline), artifacts[0])
        for a in artifacts:
            identity = (a["name"], a["bytes"], a["deploy_bytes"], a["val_accuracy"], a["accuracy"])
            if identity in points:
                points[identity]["variants"].append(result["name"])
                continue
            points[identity] = {
                "artifact": a["name"],
                "variants": [result["name"]],
                "path": str(Path(result["run_dir"]) / a["path"]),
                "accuracy": a["val_accuracy"],
                "test_accuracy": a["accuracy"],
                "drop": round(100 * (base["val_accuracy"] - a["val_accuracy"]), 4),
                "bytes": a["bytes"],
                "deploy_bytes": a["deploy_bytes"],
                "compression": a["compression"],
                "sparsity": a["sparsity"],
                "latency_ms_b1_p50": a.get("latency_ms_b1_p50"),
                "status": a["status"],
            }
    everyone = len(results)
    for p in points.values():
        if len(p["variants"]) == everyone and everyone > 1:
            p["label"] = p["artifact"]
        else:
            more = f" (+{len(p['variants']) - 1})" if len(p["variants"]) > 1 else ""
            p["label"] = f"{p['variants'][0]}/{p['artifact']}{more}"
    return list(points.values())


# ---------------------------------------------------------------- the sweep


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
) -> dict:
    """Run every variant, then write `<out>/sweep.json`, `sweep.md` and `sweep.png`."""
    from compress.pipeline import check_inputs

    pipeline = Path(pipeline).resolve()
    config = load_pipeline(pipeline)
    variants = plan_variants(config, axes)
    if ray_address is not None:
        import_ray()  # before any work: a missing Ray is a usage error
    check_inputs(config, data_root)  # data and model, once, before any folder is made
    out = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir else out / "cache"
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    tasks = [{"name": v["name"], "overrides": v["overrides"], "pipeline": str(pipeline),
              "run_dir": str(out / v["name"]), "data_root": root, "cache_dir": str(cache), "device": device}
             for v in variants]
    log.info("sweep of %s: %d variants into %s", config.name, len(tasks), out)
    results = run_tasks(tasks, jobs=jobs, ray_address=ray_address)
    summary = summarize(config.name, str(pipeline), axes, results, max_drop)
    write_sweep(out, summary)
    return summary


def summarize(name: str, pipeline: str, axes: dict, results: list[dict], max_drop: float | None) -> dict:
    points = collect_points(results)
    frontier = pareto_frontier(points)
    on_front = {p["label"] for p in frontier}
    for p in points:
        p["frontier"] = p["label"] in on_front
    stages = [s for r in results for s in r["report"]["stages"]]
    train_runs = sum(1 for r in results for s in r["report"]["stages"] if s["name"] == "train" and not s["cached"])
    budget = within_budget(points, max_drop) if max_drop is not None else None
    if budget is not None:
        for p in points:
            p["within_budget"] = p["status"] == "ok" and p["drop"] <= max_drop + 1e-9
    return {
        "pipeline": name,
        "pipeline_file": pipeline,
        "axes": axes,
        "variants": [
            {"name": r["name"], "overrides": r["overrides"], "run_dir": r["run_dir"],
             "stages_cached": [s["name"] for s in r["report"]["stages"] if s["cached"]],
             "dense_accuracy": r["report"]["training"]["dense_val_accuracy"]}
            for r in results
        ],
        "stages_total": len(stages),
        "stages_reused": sum(1 for s in stages if s["cached"]),
        "train_runs": train_runs,
        "points": points,
        "frontier": [p["label"] for p in frontier],
        "budget": budget,
        "failed": [p["label"] for p in points if p["status"] != "ok"],
    }


def reuse_sentence(summary: dict) -> str:
    n = len(summary["variants"])
    return (f"{n} variants: reused {summary['stages_reused']} of {summary['stages_total']} stages; "
            f"training ran in {summary['train_runs']} of {n} variants")


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
    rows = [[p["label"], f"{p['accuracy']:.2%}", delta(p["drop"]), _percent(p.get("test_accuracy")),
             f"{p['deploy_bytes']:,}",
             f"{p['compression']:.1f}x", f"{p['sparsity']:.1%}"] for p in points]
    if markdown:
        return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                         + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_markdown(summary: dict) -> str:
    out = [f"# Sweep of {summary['pipeline']}", ""]
    out += [f"- `{k}`: {', '.join(_short(v) for v in values)}" for k, values in summary["axes"].items()]
    out += ["", reuse_sentence(summary) + ".", ""]
    out += ["## Pareto frontier", "",
            "Smallest deploy size for each validation accuracy level: no other artifact is both smaller "
            "and at least as accurate on the validation split. Δ pts (validation) against dense; the "
            "test split is only reported.", ""]
    out += [format_points(frontier_rows(summary), markdown=True), ""]
    if summary["budget"] is not None:
        out += ["## Accuracy budget", "", budget_sentence(summary["budget"], summary["points"]) + ".", ""]
    out += ["![accuracy against deploy size](sweep.png)", "", "## All artifacts", ""]
    budget = summary["budget"]
    headers = ["variant(s)", "artifact", "val %", "Δ pts", "test %", "deploy bytes", "ratio", "sparsity", "frontier"]
    headers += [f"within {budget['max_drop']:g} pts"] if budget else []
    out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for p in sorted(summary["points"], key=lambda p: (p["deploy_bytes"], -p["accuracy"])):
        variants = "all" if p["label"] == p["artifact"] else ", ".join(p["variants"])
        artifact = p["artifact"] + ("" if p["status"] == "ok" else f" ({p['status']})")
        cells = [variants, artifact, f"{p['accuracy']:.2%}", delta(p["drop"]), _percent(p.get("test_accuracy")),
                 f"{p['deploy_bytes']:,}",
                 f"{p['compression']:.1f}x", f"{p['sparsity']:.1%}", "yes" if p["frontier"] else ""]
        if budget:
            cells.append("smallest" if p["label"] == budget["chosen"] else "yes" if p["within_budget"] else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_sweep(out: Path, summary: dict) -> None:
    from compress.analysis.plot import plot_tradeoff

    write_json(out / "sweep.json", summary)
    write_text(out / "sweep.md", format_markdown(summary))
    chosen = summary["budget"]["chosen"] if summary["budget"] else None
    # the budget as a line only when every variant has the same dense model
    dense = [p for p in summary["points"] if p["artifact"] == "dense"]
    line = None
    if summary["budget"] and len(dense) == 1:
        line = dense[0]["accuracy"] - summary["budget"]["max_drop"] / 100
    plot_tradeoff(summary["points"], summary["frontier"], out / "sweep.png",
                  title=f"{summary['pipeline']}: validation accuracy against deploy size", chosen=chosen, budget_line=line)
