"""`[quantize] bits = "auto"`: each layer's width for the packed variant, chosen on the
validation split.

    choice = allocate(onnx.load("pruned.onnx"), val_images, val_labels, AutoBitsConfig())
    choice["bits"]       # {"features.0": 6, "features.3": 3, ...}
    choice["layers"]     # per layer: weights, non-zero, bits, bytes, measured drop

0. Reference: every layer at each candidate width; the width with the best validation
   accuracy (the widest among equals) is the reference. A model fine-tuned with 4-bit fake
   quantization is best at 4 bits, not at the widest.
1. Sensitivity: the validation accuracy with one layer at each candidate width and every
   other layer at the reference (the weights the packed file would hold: the same codes
   and stored scales), as a drop from the reference, counted in images.
2. Choice: the widths whose codes and gaps take the fewest bytes (encode.packed.weight_bytes)
   with the predicted drop (the sum of the layers' drops, a gain counted as none) within
   `max_drop` points of the reference: an exact multiple-choice knapsack by dynamic
   programming over the drop budget in whole images. Widths wider than the reference cost
   bytes and gain nothing predicted.
3. Check: the whole choice on validation against the reference. While it misses the
   budget, the chosen layer with the largest measured drop (ties: the one whose bytes grow
   least) is widened to the next candidate and the choice measured again.

The test split is never read.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from compress.config import AutoBitsConfig
from compress.encode.packed import dequantized, layer_weights, quantize_weight, weight_bytes


class _Evaluator:
    """Correct validation predictions of the float model with some weights replaced."""

    def __init__(self, model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray, scales):
        self.model, self.images, self.labels, self.scales = model, images, labels, scales
        self.layers = layer_weights(model)
        self.floats = {
            i.name: numpy_helper.to_array(i)
            for i in model.graph.initializer
            if i.name in {w for w, _ in self.layers.values()}
        }
        self.cache: dict[tuple, np.ndarray] = {}

    def weight(self, layer: str, bits: int | None) -> np.ndarray:
        name, axis = self.layers[layer]
        if bits is None:
            return self.floats[name]
        if (layer, bits) not in self.cache:
            self.cache[layer, bits] = dequantized(self.floats[name], bits, axis, self.scales)
        return self.cache[layer, bits]

    def correct(self, widths: dict[str, int | None]) -> int:
        model = onnx.ModelProto.FromString(self.model.SerializeToString())
        for init in model.graph.initializer:
            layer = init.name.removesuffix(".weight")
            if layer in widths and init.name == self.layers[layer][0]:
                init.CopyFrom(numpy_helper.from_array(self.weight(layer, widths[layer]), init.name))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        correct = 0
        for start in range(0, len(self.images), 1000):
            batch = self.images[start : start + 1000]
            logits = session.run(None, {name: batch})[0]
            correct += int((logits.argmax(1) == self.labels[start : start + 1000]).sum())
        return correct


def _knapsack(costs: dict[str, dict[int, tuple[int, int]]], budget: int) -> dict[str, int]:
    """Per layer the width (costs[layer][bits] = (bytes, drop in images)) with the fewest
    bytes in all whose drops sum to at most `budget`."""
    best: dict[int, tuple[int, dict[str, int]]] = {0: (0, {})}  # drop used -> (bytes, widths)
    for layer, options in costs.items():
        grown: dict[int, tuple[int, dict[str, int]]] = {}
        for used, (size, chosen) in best.items():
            for bits, (nbytes, drop) in options.items():
                total = used + max(drop, 0)
                if total > budget:
                    continue
                if total not in grown or size + nbytes < grown[total][0]:
                    grown[total] = (size + nbytes, {**chosen, layer: bits})
        best = grown
    return min(best.values(), key=lambda entry: entry[0])[1]


def allocate(
    model: onnx.ModelProto,
    images: np.ndarray,
    labels: np.ndarray,
    config: AutoBitsConfig,
    scales: str = "float32",
) -> dict:
    """The widths of `bits = "auto"` and their evidence (see the module docstring)."""
    ev = _Evaluator(model, images, labels, scales)
    candidates = config.candidates
    count = len(labels)
    float_correct = ev.correct({})
    # The reference: the uniform width with the best validation accuracy (the widest among
    # equals). After quantization-aware training at 4 bits that is 4, not the widest.
    uniform = {bits: ev.correct(dict.fromkeys(ev.layers, bits)) for bits in candidates}
    top = max(candidates, key=lambda bits: (uniform[bits], bits))
    reference = dict.fromkeys(ev.layers, top)
    base = uniform[top]
    allowed = math.floor(config.max_drop / 100 * count + 1e-9)  # images the budget allows
    costs: dict[str, dict[int, tuple[int, int]]] = {}
    for layer, (name, axis) in ev.layers.items():
        costs[layer] = {}
        for bits in candidates:
            codes, _ = quantize_weight(ev.floats[name], bits, axis, scales)
            drop = 0 if bits == top else base - ev.correct({**reference, layer: bits})
            costs[layer][bits] = (weight_bytes(codes, bits), drop)
    chosen = _knapsack(costs, allowed)
    steps = []
    measured = ev.correct(chosen)
    while base - measured > allowed and any(b < top for b in chosen.values()):
        layer = max(
            (n for n, b in chosen.items() if b < top),
            key=lambda n: (costs[n][chosen[n]][1], -_growth(costs[n], chosen[n], candidates)),
        )
        chosen[layer] = next(b for b in candidates if b > chosen[layer])
        measured = ev.correct(chosen)
        steps.append({"widened": layer, "to": chosen[layer], "val_accuracy": measured / count})

    def points(images_lost: int) -> float:
        return round(100 * images_lost / count, 4)

    return {
        "bits": chosen,
        "rule": "exact multiple-choice knapsack over the drop budget in validation images",
        "max_drop": config.max_drop,
        "candidates": candidates,
        "val_samples": count,
        "float_val_accuracy": float_correct / count,
        "reference_bits": top,
        "uniform_val_accuracy": {str(b): c / count for b, c in uniform.items()},
        "predicted_drop": points(sum(max(costs[n][b][1], 0) for n, b in chosen.items())),
        "measured_drop": points(base - measured),
        "val_accuracy": measured / count,
        "steps_back": steps,
        "layers": {
            layer: {
                "weights": int(ev.floats[ev.layers[layer][0]].size),
                "nonzero": int(np.count_nonzero(ev.floats[ev.layers[layer][0]])),
                "bits": bits,
                "bytes": costs[layer][bits][0],
                "drop": points(costs[layer][bits][1]),
                "drops": {str(b): points(d) for b, (_, d) in costs[layer].items()},
                "bytes_by_bits": {str(b): n for b, (n, _) in costs[layer].items()},
            }
            for layer, bits in chosen.items()
        },
    }


def measured(
    model: onnx.ModelProto,
    images: np.ndarray,
    labels: np.ndarray,
    widths: dict[str, int],
    scales: str = "float32",
) -> dict:
    """The validation accuracy of `model` with every weight at its width in `widths` (as the
    packed file holds them), beside the float model's: widths chosen before fine-tuning,
    checked on the fine-tuned model."""
    ev = _Evaluator(model, images, labels, scales)
    count = len(labels)
    return {
        "float_val_accuracy": ev.correct({}) / count,
        "val_accuracy": ev.correct(widths) / count,
        "val_samples": count,
    }


def _growth(options: dict[int, tuple[int, int]], bits: int, candidates: list[int]) -> int:
    wider = next(b for b in candidates if b > bits)
    return options[wider][0] - options[bits][0]
