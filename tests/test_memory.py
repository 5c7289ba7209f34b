"""Activation memory at batch 1 (compress.encode.memory): hand-built graphs with answers worked
out by hand, and real exported files against a second, deliberately simple liveness count
whose tensor sizes come from onnxruntime itself."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.config import QuantizeConfig
from compress.encode.memory import MemoryEstimateError, activation_memory
from compress.encode.onnx_tools import artifact_metadata
from compress.pruning import apply_masks, make_permanent
from compress.registry import build_model
from compress.sharing import WeightSharing
from compress.stages.export import export_onnx
from compress.stages.quantize import variant_name, write_variant

F = TensorProto.FLOAT


def weight(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def model_of(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    """A model of `nodes`; inputs and outputs as (name, type, shape), batch axis "N"."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def live(memory) -> list[int]:
    return [node.live_bytes for node in memory.per_node]


def chain() -> onnx.ModelProto:
    """x [1,4] -> MatMul -> a [1,8] -> Relu -> b [1,8] -> MatMul -> y [1,2]."""
    return model_of(
        [
            helper.make_node("MatMul", ["x", "w1"], ["a"]),
            helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("MatMul", ["b", "w2"], ["y"]),
        ],
        [("x", F, ["N", 4])],
        [("y", F, ["N", 2])],
        [weight("w1", 4, 8), weight("w2", 8, 2)],
    )


def test_a_chain_holds_a_node_input_and_output_at_a_time():
    # x [1,4] 16 B -> a [1,8] 32 B -> b [1,8] 32 B -> y [1,2] 8 B (float32)
    model = chain()
    memory = activation_memory(model)
    assert live(memory) == [16 + 32, 32 + 32, 32 + 8]
    assert memory.peak_bytes == 64 and memory.peak_index == 1
    assert [(t.name, t.shape, t.bytes) for t in memory.peak_tensors] == [
        ("a", (1, 8), 32),
        ("b", (1, 8), 32),
    ]
    assert [node.weight_bytes for node in memory.per_node] == [4 * 8 * 4, 0, 8 * 2 * 4]


def test_a_residual_keeps_the_branch_input_alive_until_the_add():
    # x [1,8] 32 B is read again by the Add: a 32, b [1,16] 64, c 32, y 32
    model = model_of(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("MatMul", ["a", "w1"], ["b"]),
            helper.make_node("MatMul", ["b", "w2"], ["c"]),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [("x", F, ["N", 8])],
        [("y", F, ["N", 8])],
        [weight("w1", 8, 16), weight("w2", 16, 8)],
    )
    memory = activation_memory(model)
    assert live(memory) == [32 + 32, 32 + 32 + 64, 32 + 64 + 32, 32 + 32 + 32]
    assert memory.peak_bytes == 128 and memory.peak_index == 1  # the first of equal peaks
    assert {t.name for t in memory.peak_tensors} == {"x", "a", "b"}


def test_int8_activations_count_one_byte_an_entry():
    # x [1,16] float 64 B -> q int8 16 B -> d float 64 B -> y float 64 B
    model = model_of(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
            helper.make_node("Relu", ["d"], ["y"]),
        ],
        [("x", F, ["N", 16])],
        [("y", F, ["N", 16])],
        [
            numpy_helper.from_array(np.float32(0.1), "s"),
            numpy_helper.from_array(np.int8(0), "z"),
        ],
    )
    memory = activation_memory(model)
    assert live(memory) == [64 + 16, 16 + 64, 64 + 64]
    assert [node.weight_bytes for node in memory.per_node] == [4 + 1, 4 + 1, 0]


def test_a_weight_decoded_from_initializers_is_a_weight_not_an_activation():
    # w = (Cast(codes) - 0) * scale, all from initializers: folded when the session loads
    model = model_of(
        [
            helper.make_node("Cast", ["codes"], ["wf"], to=F),
            helper.make_node("Constant", [], ["scale"], value_float=0.5),
            helper.make_node("Mul", ["wf", "scale"], ["w"]),
            helper.make_node("DequantizeLinear", ["codes", "s"], ["w2"]),
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ],
        [("x", F, ["N", 4])],
        [("y", F, ["N", 4])],
        [weight("codes", 4, 4, dtype=np.int8), numpy_helper.from_array(np.float32(0.1), "s")],
    )
    memory = activation_memory(model)
    assert [node.op_type for node in memory.per_node] == ["MatMul", "MatMul"]
    assert [node.index for node in memory.per_node] == [4, 5]
    assert live(memory) == [16 + 16, 16 + 16]
    assert [node.weight_bytes for node in memory.per_node] == [64, 64]  # decoded: float32


def test_every_output_of_a_node_counts_while_it_runs_even_unread():
    # x [1,10] 40 B splits into a [1,4] 16, b [1,4] 16 and e [1,2] 8 (e is never read)
    model = model_of(
        [
            helper.make_node("Split", ["x", "parts"], ["a", "b", "e"], axis=1),
            helper.make_node("Relu", ["a"], ["c"]),
            helper.make_node("Add", ["c", "b"], ["y"]),
        ],
        [("x", F, ["N", 10])],
        [("y", F, ["N", 4])],
        [numpy_helper.from_array(np.array([4, 4, 2], np.int64), "parts")],
    )
    memory = activation_memory(model)
    assert live(memory) == [40 + 16 + 16 + 8, 16 + 16 + 16, 16 + 16 + 16]
    assert memory.peak_index == 0 and {t.name for t in memory.peak_tensors} == {"x", "a", "b", "e"}


def test_a_graph_output_stays_alive_to_the_end():
    # a [1,4] 16 B is a graph output as well as read by the next node
    model = model_of(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("MatMul", ["a", "w"], ["b"]),
            helper.make_node("Relu", ["b"], ["c"]),
        ],
        [("x", F, ["N", 4])],
        [("a", F, ["N", 4]), ("c", F, ["N", 64])],
        [weight("w", 4, 64)],
    )
    memory = activation_memory(model)
    assert live(memory) == [16 + 16, 16 + 256, 16 + 256 + 256]
    assert memory.peak_bytes == 528


def test_a_graph_with_a_subgraph_is_refused_with_the_reason():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", F, ["N", 4])],
    )
    model = model_of(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Cast", ["total"], ["flag"], to=TensorProto.BOOL),
            helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch),
        ],
        [("x", F, ["N", 4])],
        [("y", F, ["N", 4])],
    )
    with pytest.raises(MemoryEstimateError, match="subgraph"):
        activation_memory(model)


def test_an_op_shape_inference_does_not_know_is_refused_and_verify_reports_null(tmp_path):
    from compress.stages.verify import memory_keys

    graph = helper.make_graph(
        [helper.make_node("Unknown", ["x"], ["y"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", F, ["N", 4])],
        [helper.make_tensor_value_info("y", F, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(MemoryEstimateError, match="'y': shape inference leaves its shape"):
        activation_memory(model)
    path = tmp_path / "unknown.onnx"
    onnx.save(model, path)
    keys = memory_keys(path, model, weight_bytes=0, measure=False)
    assert keys["flash_bytes"] == path.stat().st_size
    assert keys["peak_activation_bytes"] is keys["ram_bytes"] is keys["measured_ram_bytes"] is None


# ---------------------------------------------------------------- real files


def simple_peak(path) -> int:
    """The peak by the definition, counted the plain way: sizes from onnxruntime's own output
    arrays at batch 1 (every activation made a graph output), constants by fixed point."""
    model = onnx.load(str(path))
    graph = model.graph
    constant = {init.name for init in graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            outs = {o for o in node.output if o}
            if not outs <= constant and all(i in constant for i in node.input if i):
                constant |= outs
                changed = True
    running = [node for node in graph.node if not {o for o in node.output if o} <= constant]
    inputs = [v.name for v in graph.input if v.name not in constant]
    made = inputs + [o for node in running for o in node.output if o]
    outputs = [v.name for v in graph.output]
    probe = copy.deepcopy(model)
    for name in made:
        if name not in outputs:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options)
    feed = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in session.get_inputs()
    }
    names = [o.name for o in session.get_outputs()]
    sizes = {n: a.nbytes for n, a in zip(names, session.run(None, feed), strict=True)}
    peak = 0
    for i, node in enumerate(running):
        before = inputs + [o for n in running[:i] for o in n.output if o]
        still_read = {t for n in running[i:] for t in n.input}
        alive = {t for t in before if t in outputs or t in still_read}
        alive |= {o for o in node.output if o}
        peak = max(peak, sum(sizes[t] for t in alive))
    return peak


@pytest.fixture(scope="module")
def real_files(pruned_export, tiny_data, tmp_path_factory):
    """Files of the pruned test model: float, int8, packed-int4 and codebook (weights shared,
    levels untrained), and an untrained LeNet-5 (convolutions, pooling, a reshape)."""
    folder = tmp_path_factory.mktemp("memory")
    model = copy.deepcopy(pruned_export.model)
    apply_masks(model, pruned_export.masks)
    WeightSharing(model, 3).bake(model)
    make_permanent(model)
    dense = folder / "pruned.onnx"
    metadata = artifact_metadata(
        tiny_data.preprocessing, list(tiny_data.classes), "simplenet", "pruned"
    )
    export_onnx(model.eval(), tiny_data.input_shape, dense, opset=18, metadata=metadata)
    calibration = tiny_data.tensors("train", limit=64)[0].numpy()
    paths = {"dense": dense}
    for variant in ("static", "packed-int4", "codebook"):
        paths[variant] = folder / f"{variant_name('pruned', variant)}.onnx"
        write_variant(dense, paths[variant], variant, QuantizeConfig(), calibration)
    lenet = build_model("lenet5", kwargs={"num_classes": 10}).eval()
    paths["lenet5"] = folder / "lenet5.onnx"
    export_onnx(lenet, tiny_data.input_shape, paths["lenet5"], opset=18, metadata=metadata)
    paths["lenet5-int8"] = folder / "lenet5-int8-static.onnx"
    write_variant(paths["lenet5"], paths["lenet5-int8"], "static", QuantizeConfig(), calibration)
    return paths


@pytest.mark.parametrize("kind", ["dense", "static", "packed-int4", "codebook", "lenet5-int8"])
def test_the_peak_of_real_files_is_the_plain_count(real_files, kind):
    memory = activation_memory(onnx.load(str(real_files[kind])))
    assert memory.peak_bytes == simple_peak(real_files[kind]) > 0
    assert memory.peak_bytes == sum(t.bytes for t in memory.peak_tensors)


def test_decode_ops_are_weights_and_a_conv_net_counts_its_feature_maps(real_files):
    peaks = {k: activation_memory(onnx.load(str(p))) for k, p in real_files.items()}
    for kind in ("packed-int4", "codebook"):  # decoded at load: the float model's activations
        assert live(peaks[kind]) == live(peaks["dense"])
        ops = [n.op_type for n in peaks[kind].per_node]
        assert ops == [n.op_type for n in peaks["dense"].per_node]
    assert peaks["lenet5"].peak_bytes == simple_peak(real_files["lenet5"])
    # Caffe LeNet-5 at batch 1: its input image and the first convolution's 20x24x24 output
    first = peaks["lenet5"].per_node[0]
    assert first.op_type == "Conv" and first.live_bytes == (28 * 28 + 20 * 24 * 24) * 4


def test_report_memory_shows_each_node_and_marks_the_peak(tmp_path):
    import json

    from click.testing import CliRunner

    from compress.cli import main

    model = chain()
    onnx.save(model, tmp_path / "dense.onnx")
    row = {"name": "dense", "path": "dense.onnx", "weight_bytes": 192}
    (tmp_path / "report.json").write_text(json.dumps({"artifacts": [row]}))
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--memory"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "dense: weights held 192 bytes"
    nodes = [line.split() for line in lines[3:6]]
    assert [n[2:4] for n in nodes] == [["MatMul", "48"], ["Relu", "64"], ["MatMul", "40"]]
    assert [line.endswith("<- peak") for line in lines[3:6]] == [False, True, False]
    assert lines[6] == "peak 64 bytes: a [1, 8] 32, b [1, 8] 32"
    missing = CliRunner().invoke(main, ["report", str(tmp_path), "--memory", "--artifact", "x"])
    assert missing.exit_code == 2 and "no artifact 'x'" in missing.output
