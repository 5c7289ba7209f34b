"""Sweep maths: points from the variants' reports, the size/accuracy Pareto frontier and
the accuracy budget.

    points = collect_points(results)            # one per distinct artifact, with its drop
    frontier = pareto_frontier(points)          # smallest deploy size per accuracy level
    budget = within_budget(points, max_drop=0.5)        # sweep.json's `budget`
    choice = best_within_budget(points, max_drop=0.5)   # the rule itself (tune and search too)

Accuracy (`val_accuracy`) and drop are on the validation split, where choices are made;
`test_accuracy` is only reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from compress.budget import Limits, misses, violation
from compress.results import DENSE, TEST, VAL, Budget, accuracy_points, baseline_of, drop_pts


def dominates(q: dict, p: dict) -> bool:
    """q is no larger and at least as accurate as p, and strictly better in one of them."""
    return (
        q["deploy_bytes"] <= p["deploy_bytes"]
        and q[VAL] >= p[VAL]
        and (q["deploy_bytes"] < p["deploy_bytes"] or q[VAL] > p[VAL])
    )


def pareto_frontier(points: list[dict]) -> list[dict]:
    """The points (with `deploy_bytes` and `val_accuracy`; failed ones ignored) that no other
    point dominates, smallest first: the smallest deploy size for each accuracy level."""
    ok = [p for p in points if p.get("status", "ok") == "ok"]
    front = [p for p in ok if not any(dominates(q, p) for q in ok if q is not p)]
    return sorted(front, key=lambda p: (p["deploy_bytes"], -p[VAL]))


class Choice(NamedTuple):
    """What the budget rule picks: `best` within the budget when `meets`, else the closest to
    it; `ties` are as small and as accurate as a best within it."""

    best: dict | None
    meets: bool
    ties: list[dict]


def meets_budget(point: dict, max_drop: float | None, limits: Limits | None = None) -> bool:
    """At most `max_drop` points below the bar (exactly at the limit counts; None: no budget),
    and within the device `limits` (flash, RAM, activation, latency: compress.budget)."""
    within = max_drop is None or point["drop"] <= max_drop + 1e-9
    return within and (limits is None or violation(point, limits) == 0.0)


def device_misses(point: dict, limits: Limits | None) -> list[str]:
    """What a point misses of the device limits ("ram 12.3 KB over"); empty without limits."""
    return [] if limits is None else misses(point, limits)


def _label(point: dict) -> str:
    return point.get("label") or point["artifact"]


def best_within_budget(
    points: list[dict],
    max_drop: float | None,
    baseline: str = DENSE,
    limits: Limits | None = None,
    by: str = "deploy_bytes",
) -> Choice:
    """The budget rule of sweep, tune and search: among the verified points other than the
    baseline (`artifact`, `deploy_bytes`, `val_accuracy`, `drop`, `status`), the smallest
    deploy size within `max_drop` points (on equal size the more accurate, then the first
    label); with none within it, the one with the smallest drop (on equal drop the smaller).
    `max_drop` None: every point is within it. `best` is None when no point is verified.
    With device `limits` a point must be within them too; with none that is, the closest is
    the one that misses them least (compress.budget.violation), then the smallest drop.
    `by`: what "smallest" measures (`latency_vs_dense`: the fastest, for search's latency
    objective; a point that lacks it comes last)."""
    compressed = [p for p in points if p["artifact"] != baseline and p.get("status", "ok") == "ok"]
    meets = [p for p in compressed if meets_budget(p, max_drop, limits)]

    def size(p: dict) -> float:
        return float("inf") if p.get(by) is None else p[by]

    if meets:
        best = min(meets, key=lambda p: (size(p), -p[VAL], _label(p)))
        ties = [p for p in meets if p is not best and size(p) == size(best) and p[VAL] == best[VAL]]
        return Choice(best, True, ties)
    if compressed:
        off = (lambda p: violation(p, limits)) if limits is not None else (lambda p: 0.0)
        closest = min(compressed, key=lambda p: (off(p), p["drop"], size(p)))
        return Choice(closest, False, [])
    return Choice(None, False, [])


def within_budget(
    points: list[dict],
    max_drop: float,
    baseline: str = DENSE,
    limits: Limits | None = None,
    by: str = "deploy_bytes",
) -> Budget:
    """The budget block of sweep.json and search.json (labels): `chosen`, the smallest
    within it (best_within_budget), with its `ties`; else None, and `closest` names the
    artifact with the smallest drop (None too when nothing was verified)."""
    choice = best_within_budget(points, max_drop, baseline, limits, by)
    return {
        "max_drop": max_drop,
        "chosen": choice.best["label"] if choice.meets else None,
        "ties": [p["label"] for p in choice.ties],
        "closest": choice.best["label"] if choice.best is not None and not choice.meets else None,
    }


def collect_points(
    results: list[dict], baseline: str = DENSE, reference: float | None = None
) -> list[dict]:
    """One point per distinct artifact of the variants (identical files shared by several
    variants, such as the common dense model, count once), with its drop in points
    against `reference` (a validation accuracy: the dense model of the pipeline as
    written), or, without one, against its own variant's baseline.

    A point's `val_accuracy` and `drop` are on the validation split: the frontier and the budget
    choose on them; `test_accuracy` is only reported."""
    points: dict[tuple, dict] = {}
    for result in results:
        artifacts = result["report"]["artifacts"]
        base = baseline_of(artifacts, baseline)
        for a in artifacts:
            identity = (a["name"], a["bytes"], a["deploy_bytes"], a["val_accuracy"], a["accuracy"])
            if identity in points:
                points[identity]["variants"].append(result["name"])
                continue
            points[identity] = {
                "artifact": a["name"],
                "variants": [result["name"]],
                "path": str(Path(result["run_dir"]) / a["path"]),
                "val_accuracy": a[VAL],
                "test_accuracy": a[TEST],
                "drop": drop_pts(base, a, VAL)
                if reference is None
                else round(-accuracy_points(reference, a[VAL]), 4),
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
