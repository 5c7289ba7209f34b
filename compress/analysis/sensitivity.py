"""Per-layer pruning sensitivity: prune one layer alone at several levels, measure accuracy.

    result = layer_sensitivity(model, data, levels=[0.5, 0.8, 0.9, 0.95, 0.98])
    print(format_sensitivity(result))

Each layer is pruned by magnitude (the `magnitude` method's masks, per layer) while every
other layer keeps its weights, evaluated on the validation split (no fine-tuning; choices are
never made on the test split), then restored. Layers whose
accuracy holds at high sparsity can be given higher per-layer targets
(`[prune] overrides`); `compress sensitivity` runs this on a pipeline's trained model and
writes a table and a PNG plot.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from compress import tables
from compress.data import Dataset
from compress.files import atomic_path, write_json, write_text
from compress.pruning.magnitude import Magnitude, MagnitudeConfig
from compress.pruning.masks import prunable_layers
from compress.results import accuracy_points
from compress.training import evaluate

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module, data: Dataset, levels=DEFAULT_LEVELS, batch_size: int = 1000
) -> dict:
    """Accuracy with each prunable layer pruned alone to each level."""
    model = model.cpu().eval()
    baseline = evaluate(model, data, "val", batch_size, "cpu")
    rows = []
    magnitude = Magnitude(MagnitudeConfig(scope="layer"))
    layers = prunable_layers(model)
    for index, (name, module) in enumerate(layers.items(), 1):
        # progress: a run over a large model and many levels takes minutes
        log.info(
            "sensitivity: layer %s (%d of %d), %d levels", name, index, len(layers), len(levels)
        )
        original = module.weight.detach().clone()
        for level in levels:
            keep = magnitude.masks({name: module}, {name: float(level)})[name]
            module.weight.mul_(keep)  # pruned for this evaluation only: no masks needed
            accuracy = evaluate(model, data, "val", batch_size, "cpu")
            module.weight.copy_(original)
            rows.append(
                {
                    "layer": name,
                    "params": original.numel(),
                    "sparsity": float(level),
                    "accuracy": accuracy,
                    # change in points, negative = worse (the sign of Δ pts in every other table)
                    "delta_pts": round(accuracy_points(baseline, accuracy), 2) + 0.0,
                }
            )
    return {"baseline_accuracy": baseline, "levels": [float(v) for v in levels], "rows": rows}


def format_sensitivity(result: dict, markdown: bool = False) -> str:
    """Layers as rows, levels as columns, accuracy change in points in the cells (negative =
    worse)."""
    levels = result["levels"]
    layers = list(dict.fromkeys(r["layer"] for r in result["rows"]))
    delta = {(r["layer"], r["sparsity"]): r["delta_pts"] for r in result["rows"]}
    params = {r["layer"]: r["params"] for r in result["rows"]}
    headers = [
        "layer",
        "weights",
        *[f"{v:.0%}" if v * 100 == int(v * 100) else f"{v:.1%}" for v in levels],
    ]
    rows = [
        [layer, f"{params[layer]:,}", *[f"{delta[(layer, v)] + 0.0:+.2f}" for v in levels]]
        for layer in layers
    ]
    lines = tables.markdown(headers, rows) if markdown else tables.text(headers, rows)
    title = (
        "Δ pts: validation accuracy change in points, negative = worse "
        f"(baseline {result['baseline_accuracy']:.2%}), "
        "with one layer pruned alone by magnitude, no fine-tuning"
    )
    return "\n".join([title, *lines])


def plot_sensitivity(result: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for layer in dict.fromkeys(r["layer"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["layer"] == layer]
        ax.plot(
            [100 * r["sparsity"] for r in rows],
            [100 * r["accuracy"] for r in rows],
            marker="o",
            label=f"{layer} ({rows[0]['params']:,} weights)",
        )
    ax.axhline(
        100 * result["baseline_accuracy"],
        color="gray",
        linestyle="--",
        linewidth=1,
        label="unpruned",
    )
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or "pruning sensitivity per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_sensitivity(out_dir: Path, result: dict, title: str) -> None:
    write_json(out_dir / "sensitivity.json", result)
    write_text(
        out_dir / "sensitivity.md",
        f"# {title}\n\n" + format_sensitivity(result, markdown=True) + "\n",
    )
    plot_sensitivity(result, out_dir / "sensitivity.png", title)
