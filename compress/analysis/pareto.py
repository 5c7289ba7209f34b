"""Sweep maths: points from the variants' reports, the size/accuracy Pareto frontier and
the accuracy budget.

    points = collect_points(results)            # one per distinct artifact, with its drop
    frontier = pareto_frontier(points)          # smallest deploy size per accuracy level
    budget = within_budget(points, max_drop=0.5)

Accuracy and drop are on the validation split, where choices are made; the test split is
only reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.results import DENSE, VAL, accuracy_points, baseline_of, drop_pts


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


def within_budget(points: list[dict], max_drop: float, baseline: str = DENSE) -> dict:
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


def collect_points(results: list[dict], baseline: str = DENSE, reference: float | None = None) -> list[dict]:
    """One point per distinct artifact of the variants (identical files shared by several
    variants, such as the common dense model, count once), with its drop in points
    against `reference` (a validation accuracy: the dense model of the pipeline as
    written), or, without one, against its own variant's baseline.

    A point's `accuracy` and `drop` are on the validation split: the frontier and the budget
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
                "accuracy": a["val_accuracy"],
                "test_accuracy": a["accuracy"],
                "drop": drop_pts(base, a, VAL) if reference is None
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
