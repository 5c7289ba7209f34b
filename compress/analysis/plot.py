"""The size/accuracy trade-off as a PNG (matplotlib, Agg backend: no display needed).

    plot_tradeoff(points, frontier_labels, "runs/sweep/sweep.png", title="mnist")

Each point is an artifact (`label`, `val_accuracy` 0..1 on the validation split, `deploy_bytes`);
the x axis is logarithmic, the Pareto frontier is drawn as a step line, an optional accuracy
budget as a dashed horizontal line and the chosen artifact ringed. Every point is labelled
where its label covers no other label and no marker; the legend sits below the axes.
"""

from __future__ import annotations

from pathlib import Path

from compress.files import atomic_path
from compress.results import DENSE, PRUNED, VAL
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


# Offsets (in points) tried in turn for a label: just above or below the point on its right
# (clear of the frontier's step, which leaves a point horizontally), then on its left, then
# further up and down; a label moved off its point gets a thin leader line.
LABEL_OFFSETS = [(5, 3), (5, -3), (-5, 3), (-5, -3)] + [
    (dx, dy) for step in range(1, 6) for dy in (3 + 11 * step, -3 - 11 * step) for dx in (5, -5)
]
MARKER_PADDING = 5  # pixels kept clear around each marker (RING_PADDING: the chosen one's ring)
RING_PADDING = 12


def _place_labels(
    fig, ax, points: list[dict], frontier: set[str], chosen: str | None = None
) -> list:
    """Label every point where the label overlaps no other label, no marker and stays
    inside the axes (frontier points first, so that theirs sit closest); returns the texts."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = {}
    for p in points:
        x, y = ax.transData.transform((p["deploy_bytes"], 100 * p[VAL]))
        pad = RING_PADDING if p["label"] == chosen else MARKER_PADDING
        markers[p["label"]] = Bbox.from_extents(x - pad, y - pad, x + pad, y + pad)
    placed, texts = [], []
    for p in sorted(points, key=lambda p: (p["label"] not in frontier, p["deploy_bytes"])):
        on_front = p["label"] in frontier
        others = placed + [box for label, box in markers.items() if label != p["label"]]
        ring = 5 if p["label"] == chosen else 0  # start beyond the chosen point's ring
        for attempt, (dx, dy) in enumerate(LABEL_OFFSETS, 1):
            dx, dy = dx + ring * (1 if dx > 0 else -1), dy + ring * (1 if dy > 0 else -1)
            text = ax.annotate(
                p["label"],
                (p["deploy_bytes"], 100 * p[VAL]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7 if on_front else 6,
                color="black" if on_front else "dimgray",
                ha="left" if dx > 0 else "right",
                va="bottom" if dy > 0 else "top",
                arrowprops={
                    "arrowstyle": "-",
                    "color": "gray",
                    "linewidth": 0.5,
                    "shrinkA": 0,
                    "shrinkB": 3,
                }
                if abs(dy) > 3 + ring
                else None,
            )
            box = text.get_window_extent(renderer)
            inside = (
                frame.x0 <= box.x0
                and box.x1 <= frame.x1
                and frame.y0 <= box.y0
                and box.y1 <= frame.y1
            )
            clear = inside and not any(box.overlaps(other) for other in others)
            if clear or attempt == len(LABEL_OFFSETS):
                placed.append(box)
                texts.append(text)
                break
            text.remove()
    return texts


def ring_chosen(ax, point: dict, label: str) -> None:
    """A red ring around the chosen artifact (`deploy_bytes`, validation accuracy)."""
    ax.scatter(
        [point["deploy_bytes"]],
        [100 * point[VAL]],
        s=220,
        facecolors="none",
        edgecolors="tab:red",
        linewidths=1.8,
        zorder=4,
        label=label,
    )


def size_accuracy_axes(ax, title: str) -> None:
    """Deploy bytes (log) against validation accuracy, as every trade-off plot draws them."""
    ax.set_xscale("log")
    ax.set_xlabel("deploy bytes (smaller of .onnx.gz and .onnx.xz), log scale")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)


def draw_tradeoff(
    points: list[dict],
    frontier: list[str],
    title: str = "",
    chosen: str | None = None,
    budget_line: float | None = None,
    budget_label: str = "accuracy budget",
):
    """The figure of `plot_tradeoff` (matplotlib Figure; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [p for p in points if p.get("status", "ok") == "ok"]
    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    kinds: dict[str, list[dict]] = {}
    for p in ok:
        kinds.setdefault(p["artifact"], []).append(p)
    for artifact, group in sorted(kinds.items(), key=lambda kind: _order(kind[0])):
        ax.scatter(
            [p["deploy_bytes"] for p in group],
            [100 * p[VAL] for p in group],
            s=36,
            color=_color(artifact),
            label=artifact,
            zorder=3,
            alpha=0.85,
        )
    by_label = {p["label"]: p for p in ok}
    front = sorted(
        (by_label[x] for x in frontier if x in by_label), key=lambda p: p["deploy_bytes"]
    )
    if front:
        ax.step(
            [p["deploy_bytes"] for p in front],
            [100 * p[VAL] for p in front],
            where="post",
            color="black",
            linewidth=1.2,
            label="Pareto frontier",
            zorder=2,
        )
    if budget_line is not None:
        ax.axhline(
            100 * budget_line, color="tab:red", linestyle="--", linewidth=1, label=budget_label
        )
    if chosen in by_label:
        ring_chosen(ax, by_label[chosen], "smallest within budget")
    size_accuracy_axes(ax, title)
    ax.margins(x=0.3, y=0.12)  # room for the labels
    # the legend below the axes, where no label or point can be under it
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False)
    fig.tight_layout()
    _place_labels(fig, ax, ok, set(frontier), chosen)
    return fig


def plot_tradeoff(
    points: list[dict],
    frontier: list[str],
    path: str | Path,
    title: str = "",
    chosen: str | None = None,
    budget_line: float | None = None,
    budget_label: str = "accuracy budget",
) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = draw_tradeoff(points, frontier, title, chosen, budget_line, budget_label)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
