"""The size/accuracy trade-off as a PNG (matplotlib, Agg backend: no display needed).

    plot_tradeoff(points, frontier_labels, "runs/sweep/sweep.png", title="mnist")

Each point is an artifact (`label`, `accuracy` 0..1, `deploy_bytes`); the x axis is
logarithmic, the Pareto frontier is drawn as a step line, an optional accuracy budget as a
dashed horizontal line and the chosen artifact ringed.
"""

from __future__ import annotations

from pathlib import Path

from compress.files import atomic_path
from compress.results import DENSE, PRUNED
from compress.variants import for_artifact

ARTIFACT_COLORS = {DENSE: "tab:gray", PRUNED: "tab:blue"}  # variants: their own `color`
OTHER_COLOR = "tab:green"  # a float artifact of another kind (pruned-inputs)


def _color(artifact: str) -> str:
    if artifact in ARTIFACT_COLORS:
        return ARTIFACT_COLORS[artifact]
    variant = for_artifact(artifact)
    return variant.color if variant is not None else OTHER_COLOR


def _order(artifact: str) -> tuple:
    """Legend order: the float artifacts, then the variants in their registry `order`."""
    variant = for_artifact(artifact)
    return (variant is not None, variant.order if variant is not None else 0, artifact)


# Offsets (points) tried in turn for a label, so that labels of nearby points do not overlap.
LABEL_OFFSETS = [(6, 3), (6, -10), (6, 12), (6, -19), (6, 21), (6, -28), (6, 30), (6, -37)]


def _place_labels(fig, ax, points: list[dict], frontier: set[str]) -> None:
    """Label every point, moving a label up or down until it overlaps no earlier one
    (frontier points first, so that theirs sit closest)."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for p in sorted(points, key=lambda p: (p["label"] not in frontier, p["deploy_bytes"])):
        on_front = p["label"] in frontier
        for offset in LABEL_OFFSETS:
            text = ax.annotate(p["label"], (p["deploy_bytes"], 100 * p["accuracy"]), xytext=offset,
                               textcoords="offset points", fontsize=7 if on_front else 6,
                               color="black" if on_front else "dimgray")
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed) or offset == LABEL_OFFSETS[-1]:
                placed.append(box)
                break
            text.remove()


def plot_tradeoff(
    points: list[dict],
    frontier: list[str],
    path: str | Path,
    title: str = "",
    chosen: str | None = None,
    budget_line: float | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ok = [p for p in points if p.get("status", "ok") == "ok"]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    kinds: dict[str, list[dict]] = {}
    for p in ok:
        kinds.setdefault(p["artifact"], []).append(p)
    for artifact, group in sorted(kinds.items(), key=lambda kind: _order(kind[0])):
        ax.scatter([p["deploy_bytes"] for p in group], [100 * p["accuracy"] for p in group],
                   s=36, color=_color(artifact), label=artifact, zorder=3, alpha=0.85)
    by_label = {p["label"]: p for p in ok}
    front = sorted((by_label[x] for x in frontier if x in by_label), key=lambda p: p["deploy_bytes"])
    if front:
        ax.step([p["deploy_bytes"] for p in front], [100 * p["accuracy"] for p in front], where="post",
                color="black", linewidth=1.2, label="Pareto frontier", zorder=2)
    if budget_line is not None:
        ax.axhline(100 * budget_line, color="tab:red", linestyle="--", linewidth=1, label="accuracy budget")
    if chosen in by_label:
        p = by_label[chosen]
        ax.scatter([p["deploy_bytes"]], [100 * p["accuracy"]], s=220, facecolors="none",
                   edgecolors="tab:red", linewidths=1.8, zorder=4, label="smallest within budget")
    ax.set_xscale("log")
    ax.set_xlabel("deploy bytes (smaller of .onnx.gz and .onnx.xz), log scale")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    ax.margins(x=0.25, y=0.08)  # room for the labels
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _place_labels(fig, ax, ok, set(frontier))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
