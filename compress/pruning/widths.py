"""Measured widths: how many units a layer keeps, from its latency in onnxruntime here.

    table = WidthTimer().table(layer, input_shape, widths=range(12, 20))   # {width: ms}
    keep = fastest_width(19, table, reach=0.25, tolerance=0.03)            # 16, say

`[prune] widths = "measured"` (method `channels`): after importance chose how many units a
layer keeps (`chosen`), the layer alone (a Conv or a Linear with the model's input to it,
random weights) is timed in onnxruntime at batch 1 on one thread at every width from
`chosen * (1 - reach)` to `chosen`, interleaved in rounds (compress.latency), and the layer
keeps the largest width within `tolerance` of the fastest of them: fewer units only where
that runs measurably faster. The table is cached per machine and onnxruntime version in
`$COMPRESS_CACHE_DIR/widths/` (default ~/.cache/compress), so a layer shape is timed once.
Only the layer's own output count is varied; the layers it feeds lose inputs too, which the
table does not see (they are usually faster for it). `WidthTimer.times` takes any (layer,
input shape, width) requests, an input shape with fewer channels being a layer that reads a
pruned input: the per-layer table of `latency_vs_dense` (compress.pruning.latency_target).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from compress.files import write_json
from compress.latency import summarize, timed_rounds

REPETITIONS = 60  # timed calls per width (after a warm-up), in ROUNDS rounds
ROUNDS = 6


def fastest_width(
    chosen: int, table: dict[int, float], reach: float, tolerance: float, low: int | None = None
) -> int:
    """The largest width in `chosen * (1 - reach)` (or `low`) .. `chosen` whose time in
    `table` is within `tolerance` (a fraction) of the fastest there; `chosen` when the table
    has none of them."""
    low = max(1, math.ceil(chosen * (1 - reach))) if low is None else low
    times = {w: t for w, t in table.items() if low <= w <= chosen}
    if not times:
        return chosen
    best = min(times.values())
    return max(w for w, t in times.items() if t <= best * (1 + tolerance))


def layer_graph(layer: nn.Module, input_shape: tuple[int, ...], width: int) -> onnx.ModelProto:
    """A one-node ONNX model: `layer`'s Conv (or MatMul) with `width` outputs, batch 1."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if isinstance(layer, nn.Linear):
        w = rng.standard_normal((input_shape[-1], width)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    else:
        depthwise = layer.groups > 1  # its width is its input's too
        groups = width if depthwise else 1
        kernel = list(layer.kernel_size)
        w = rng.standard_normal((width, 1 if depthwise else input_shape[0], *kernel))
        w = w.astype(np.float32)
        padding = {"auto_pad": "SAME_UPPER"} if layer.padding == "same" else {}
        if not isinstance(layer.padding, str):
            padding = {"pads": list(layer.padding) * 2}
        node = helper.make_node(
            "Conv",
            ["x", "w"],
            ["y"],
            strides=list(layer.stride),
            dilations=list(layer.dilation),
            group=groups,
            **padding,
        )
        if depthwise:
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width, *input_shape[1:]])
    graph = helper.make_graph([node], "layer", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def machine_key() -> str:
    """What a timing depends on besides the layer: the processor and onnxruntime."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} | onnxruntime {ort.__version__}"


def cache_dir() -> Path:
    return Path(os.environ.get("COMPRESS_CACHE_DIR") or Path.home() / ".cache" / "compress")


class WidthTimer:
    """Times layers at several widths; remembers (in memory and on disk) what it timed."""

    def __init__(self, folder: Path | None = None):
        key = hashlib.sha256(machine_key().encode()).hexdigest()[:16]
        self.path = (folder or cache_dir() / "widths") / f"{key}.json"
        try:
            self.known: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def table(self, layer: nn.Module, input_shape: tuple[int, ...], widths) -> dict[int, float]:
        """{width: p50 ms} of `layer` on inputs of `input_shape` (one sample) at `widths`."""
        widths = list(widths)
        return dict(zip(widths, self.times([(layer, input_shape, w) for w in widths]), strict=True))

    def times(self, requests: list[tuple[nn.Module, tuple[int, ...], int]]) -> list[float]:
        """p50 ms of each (layer, one sample's input shape, output width): the ones not known
        yet are timed together, interleaved. A shape with fewer input channels (or features)
        than the layer has is a layer that reads a pruned input."""
        keys = [f"{_signature(layer, shape)} -> {w}" for layer, shape, w in requests]
        missing = {}
        for key, request in zip(keys, requests, strict=True):
            if key not in self.known:
                missing.setdefault(key, request)
        if missing:
            self._time({k: layer_graph(*request) for k, request in missing.items()})
        return [self.known[k] for k in keys]

    def overhead(self) -> float:
        """p50 ms of a call that computes (almost) nothing, a one-node Identity graph: what
        each layer's time alone holds besides its work, and a whole model pays once."""
        key = "Identity [16] (a call's overhead)"
        if key not in self.known:
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
            graph = helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"])], "call", [x], [y]
            )
            self._time({key: helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])})
        return self.known[key]

    def _time(self, models: dict[str, onnx.ModelProto]) -> None:
        """Time `models` together, interleaved, and remember each one's p50 ms by its key."""
        sessions, inputs = [], []
        for model in models.values():
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            sessions.append(
                ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
            )
            dims = model.graph.input[0].type.tensor_type.shape.dim
            inputs.append(np.zeros([8, *[d.dim_value for d in dims][1:]], np.float32))
        rows = summarize(timed_rounds(sessions, inputs, REPETITIONS, ROUNDS))
        self.known.update({k: row["p50"] for k, row in zip(models, rows, strict=True)})
        write_json(self.path, self.known)


def _signature(layer: nn.Module, input_shape: tuple[int, ...]) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features} {list(input_shape)}"
    return (
        f"Conv k{list(layer.kernel_size)} s{list(layer.stride)} p{layer.padding} "
        f"d{list(layer.dilation)} g{'dw' if layer.groups > 1 else 1} {list(input_shape)}"
    )
