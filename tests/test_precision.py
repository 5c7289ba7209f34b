"""Per-layer widths: [quantize] bits for the packed variant (2 to 8 bits, one for all or per
layer, or "auto"), fake quantization and weight sharing at each layer's width."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.bits import code_range, widths_for
from compress.cli import main
from compress.config import AutoBitsConfig, PackedConfig, QuantizeConfig, parse_pipeline
from compress.encode.cost import session_weight_bytes
from compress.encode.onnx_tools import get_metadata, parameter_counts
from compress.encode.packed import pack_bits, unpack_bits
from compress.errors import CompressError, ConfigError
from compress.qat import attach_fake_quant, detach
from compress.sharing import WeightSharing
from compress.stages.export import export_onnx
from compress.stages.quantize import write_variant
from compress.variants.allocate import _knapsack, allocate

MIXED = {"default": 4, "net.1": 2, "net.3": 6}
DECODE_OPS = {"BitShift", "BitwiseAnd", "Slice", "MatMul"}  # a bit stream read back


def write_packed(source, target, bits, scales="float32"):
    config = QuantizeConfig(bits=bits, packed=PackedConfig(scales=scales))
    write_variant(source, target, "packed", config, None)
    return target


def run(path, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, ["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]


def test_a_table_gives_each_layer_its_width_and_a_typo_lists_the_layers():
    assert widths_for(MIXED, ["net.1", "net.3"]) == {"net.1": 2, "net.3": 6}
    assert widths_for(3, ["net.1", "net.3"]) == {"net.1": 3, "net.3": 3}
    with pytest.raises(CompressError, match=r"quantize.bits names net\.9, .*: net\.1, net\.3$"):
        widths_for({"default": 4, "net.9": 2}, ["net.1", "net.3"], "quantize.bits")


def test_each_width_has_symmetric_codes_and_4_and_8_bits_are_onnxruntimes():
    assert code_range(2) == (-1, 1)  # ternary
    assert code_range(3) == (-3, 3)
    assert code_range(4) == (-8, 7) and code_range(8) == (-127, 127)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda b: st.tuples(st.just(b), st.lists(st.integers(*code_range(b)), max_size=40))
    )
)
def test_a_bit_stream_gives_back_every_code_in_its_width(case):
    bits, codes = case
    data = pack_bits(np.array(codes, np.int8), bits)
    assert len(data) == -(-len(codes) * bits // 8)  # 8 / bits codes to a byte
    np.testing.assert_array_equal(unpack_bits(data, len(codes), bits), codes)


@pytest.mark.parametrize("scales", ["float32", "float16"])
@pytest.mark.parametrize("bits", [2, 3, MIXED], ids=["2", "3", "mixed"])
def test_the_fake_quantized_model_and_the_file_agree_on_the_whole_test_split(
    pruned_export, tiny_data, tmp_path, bits, scales
):
    x = tiny_data.tensors("test")[0]
    path = write_packed(pruned_export.path, tmp_path / "p.onnx", bits, scales)
    model = copy.deepcopy(pruned_export.model)
    handles = attach_fake_quant(model, bits)
    with torch.no_grad():
        reference = model(x).numpy()
    detach(handles)
    logits = run(path, x.numpy())
    np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
    # float32 scales: the same weights (sums in another order); float16: scales rounded.
    assert np.abs(logits - reference).max() <= (1e-4 if scales == "float32" else 2e-2)
    assert get_metadata(onnx.load(str(path)))["bits"]


def test_narrower_layers_make_a_smaller_file_whose_decode_onnxruntime_folds(
    pruned_export, tiny_data, tmp_path
):
    sizes = {
        b: write_packed(pruned_export.path, tmp_path / f"{b}.onnx", b).stat().st_size
        for b in (2, 3, 4, 8)
    }
    assert sizes[2] < sizes[3] < sizes[4] < sizes[8]
    path = tmp_path / "3.onnx"
    model = onnx.load(str(path))
    assert {n.domain for n in model.graph.node} == {""}  # standard ops only
    assert DECODE_OPS <= {n.op_type for n in model.graph.node}
    source = onnx.load(str(pruned_export.path))
    float_bytes = sum(i.ByteSize() for i in source.graph.initializer)
    # The session holds dense float weights: the bit streams were folded when it loaded.
    assert float_bytes - 512 <= session_weight_bytes(path) <= float_bytes + 512
    x = tiny_data.tensors("test")[0].numpy()[:64]
    off = run(path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # decoded on every call
    np.testing.assert_allclose(off, run(path, x), rtol=0, atol=1e-4)
    params, _ = parameter_counts(model)
    assert params == parameter_counts(source)[0]  # codes counted as the weights they stand for


def test_packed_int4_files_are_counted_as_before_and_packed_needs_float_activations(
    pruned_export, tmp_path
):
    config = QuantizeConfig(packed=PackedConfig(activations="int8"))
    with pytest.raises(CompressError, match="activations = 'float'"):
        write_variant(pruned_export.path, tmp_path / "p.onnx", "packed", config, None)
    with pytest.raises(CompressError, match=r"quantize.bits names fc9, .*net\.1, net\.3"):
        write_packed(pruned_export.path, tmp_path / "p.onnx", {"default": 4, "fc9": 2})


def test_fake_quantization_holds_each_layer_at_its_width(pruned_export):
    model = copy.deepcopy(pruned_export.model)
    handles = attach_fake_quant(model, MIXED)
    model(torch.zeros(1, 1, 28, 28))
    layers = dict(model.named_modules())
    for name, bits in widths_for(MIXED, ["net.1", "net.3"]).items():
        levels = torch.unique(layers[name].weight.detach()[0])
        assert len(levels) <= 2**bits - (0 if bits in (4, 8) else 1)
    detach(handles)


def test_weight_sharing_gives_each_layer_its_own_number_of_levels(pruned_export):
    model = copy.deepcopy(pruned_export.model)
    sharing = WeightSharing(model, {"default": 3, "net.3": 1})
    sharing.bake(model)
    layers = dict(model.named_modules())
    for name, bits in {"net.1": 3, "net.3": 1}.items():
        nonzero = layers[name].weight[layers[name].weight != 0]
        assert 1 <= len(torch.unique(nonzero)) <= 2**bits - 1


def test_qat_bits_quantize_takes_the_quantize_widths_and_tables_are_checked():
    config = parse_pipeline(
        {"finetune": {"qat_bits": "quantize"}, "quantize": {"bits": MIXED}}, "x"
    )
    assert config.finetune.qat_bits == MIXED
    gradual = {"method": "magnitude", "schedule": "gradual", "gradual": {"qat_bits": "quantize"}}
    config = parse_pipeline({"prune": gradual, "quantize": {"bits": 3}}, "x")
    assert config.prune.gradual.qat_bits == 3 and config.train.qat_bits == 0
    # "auto" widths are chosen by the finetune stage, before it trains: only it can train at them
    auto = {"finetune": {"qat_bits": "quantize"}, "quantize": {"bits": "auto"}}
    assert parse_pipeline(auto, "x").finetune.qat_bits == "quantize"
    with pytest.raises(ConfigError, match="only \\[finetune\\] can train at them"):
        parse_pipeline({"train": {"qat_bits": "quantize"}, "quantize": {"bits": "auto"}}, "x")
    with pytest.raises(ConfigError, match="2 to 8 bits"):
        parse_pipeline({"quantize": {"bits": 9}}, "x")
    with pytest.raises(ConfigError, match="'default'"):
        parse_pipeline({"quantize": {"bits": {"net.1": 2}}}, "x")


def test_an_unknown_layer_is_one_line_before_any_training(pipeline_file):
    path = pipeline_file({"quantize.bits": {"default": 4, "fc9": 2}})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "error: quantize.bits names fc9" in result.output and "net.1" in result.output


def test_the_knapsack_finds_the_fewest_bytes_within_the_budget():
    costs = {  # layer -> bits -> (bytes, drop in images)
        "a": {2: (10, 5), 4: (20, 1), 8: (40, 0)},
        "b": {2: (100, 3), 4: (200, 2), 8: (400, 0)},
    }
    assert _knapsack(costs, 0) == {"a": 8, "b": 8}
    assert _knapsack(costs, 3) == {"a": 8, "b": 2}  # greedy by bytes per image would pick a: 4
    assert _knapsack(costs, 8) == {"a": 2, "b": 2}


def test_auto_widths_are_chosen_on_validation_within_the_budget(pruned_export, tiny_data):
    images, labels = tiny_data.tensors("val")
    model = onnx.load(str(pruned_export.path))
    config = AutoBitsConfig(max_drop=1.0, candidates=[2, 4, 8])
    choice = allocate(model, images.numpy(), labels.numpy(), config)
    assert set(choice["bits"]) == {"net.1", "net.3"}
    assert choice["measured_drop"] <= 1.0
    for layer in choice["layers"].values():
        assert layer["bits"] in (2, 4, 8)
        assert layer["bytes"] == layer["bytes_by_bits"][str(layer["bits"])]
        assert set(layer) >= {"weights", "nonzero", "bits", "bytes", "drop"}
    # A zero budget keeps every layer whose narrowing loses an image at the widest.
    strict = allocate(model, images.numpy(), labels.numpy(), AutoBitsConfig(max_drop=0.0))
    assert strict["measured_drop"] <= 0.0


def test_report_layers_prints_each_layers_width_and_evidence(tmp_path):
    (tmp_path / "quantize").mkdir()
    (tmp_path / "report.json").write_text(json.dumps({"artifacts": []}))
    layers = {"net.1": {"weights": 12544, "nonzero": 900, "bits": 3, "bytes": 1238, "drop": 0.05}}
    metrics = {
        "pruned-packed": {"path": "q", "bytes": 9, "bits": {"net.1": 3, "net.3": 8}},
        "pruned-int4-packed": {"path": "q", "bytes": 9},
    }
    metrics["pruned-packed"]["allocation"] = {"layers": layers}
    (tmp_path / "quantize" / "stage.json").write_text(json.dumps({"metrics": metrics}))
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--layers"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "pruned-packed:" and "Δ val pts" in lines[1]
    assert lines[3].split() == ["net.1", "12,544", "900", "3", "1,238", "-0.05"]
    assert lines[4].split() == ["net.3", "-", "-", "8", "-", "-"]
    assert "int4" not in result.output


def test_seeds_must_be_distinct_whole_numbers(tiny_pipeline):
    result = CliRunner().invoke(main, ["run", str(tiny_pipeline), "--seeds", "0,x"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: --seeds '0,x': expected distinct whole numbers such as 0,1,2"
    )


@pytest.mark.slow
def test_a_pipeline_over_two_seeds_with_auto_widths(pipeline_file, tmp_path):
    path = pipeline_file(
        {
            "quantize.variants": ["packed"],
            "quantize.bits": "auto",
            "quantize.auto": {"max_drop": 0.5, "candidates": [2, 4, 8]},
            "finetune.qat_bits": "quantize",  # chosen before fine-tuning, trained at
        }
    )
    parent = tmp_path / "seeds"
    args = ["run", str(path), "--out", str(parent), "--seeds", "0,1", "--threads", "1"]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((parent / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1]
    rows = {r["name"]: r for r in summary["artifacts"]}
    assert rows["pruned-packed"]["seeds"] == 2 and rows["dense"]["pooled_interval"] == [0.0, 0.0]
    low, high = rows["pruned-packed"]["pooled_interval"]
    assert low <= rows["pruned-packed"]["test_delta_mean"] <= high
    assert "pooled 95%" in result.output and "pruned-packed" in result.output
    for seed in (0, 1):
        run_dir = parent / f"seed-{seed}"
        assert json.loads((run_dir / "pipeline.json").read_text())["data"]["seed"] == seed
        stage = json.loads((run_dir / "quantize" / "stage.json").read_text())
        choice = stage["metrics"]["pruned-packed"]["allocation"]
        assert choice["measured_drop"] <= 0.5 and set(choice["bits"]) == {"net.1", "net.3"}
        # the widths the fine-tuning trained at are the file's, checked on the fine-tuned model
        finetune = json.loads((run_dir / "finetune" / "stage.json").read_text())["metrics"]
        assert finetune["allocation"]["bits"] == choice["bits"]
        assert stage["metrics"]["pruned-packed"]["bits"] == choice["bits"]
        assert 0 <= choice["after_finetuning"]["val_accuracy"] <= 1
        layers = CliRunner().invoke(main, ["report", str(run_dir), "--layers"])
        assert layers.exit_code == 0 and "net.1" in layers.output


def test_a_convolution_packs_per_output_channel_at_its_width(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10)
    ).eval()
    with torch.no_grad():
        model[0].weight[0, 0] = 0  # a pruned kernel row stays zero
    export_onnx(model, (1, 8, 8), tmp_path / "cnn.onnx", opset=18, metadata={})
    widths = {"default": 3, "3": 5}
    path = write_packed(tmp_path / "cnn.onnx", tmp_path / "cnn-packed.onnx", widths)
    x = torch.randn(64, 1, 8, 8)
    handles = attach_fake_quant(model, widths)
    with torch.no_grad():
        reference = model(x).numpy()
    detach(handles)
    np.testing.assert_allclose(run(path, x.numpy()), reference, rtol=0, atol=1e-4)


def test_report_layers_prints_the_int8_timing_of_a_static_file_that_chose_its_layers(tmp_path):
    (tmp_path / "quantize").mkdir()
    (tmp_path / "report.json").write_text(json.dumps({"artifacts": []}))
    timing = {"ratio": 0.9, "ratio_low": 0.8, "ratio_high": 0.95}
    rows = [
        {"node": "n0", "layer": "conv1", "op": "Conv", "float_ms": 0.02, "int8_ms": 0.04,
         "ratio": 2.0, "ratio_low": 1.9, "ratio_high": 2.1, "quantized": False},
        {"node": "n1", "layer": "fc", "op": "MatMul", "float_ms": 0.05, "int8_ms": 0.03,
         "ratio": 0.6, "ratio_low": 0.55, "ratio_high": 0.65, "quantized": True},
    ]  # fmt: skip
    check = {"faster": timing, "all": {**timing, "ratio": 1.4}, "kept": "faster"}
    metrics = {"pruned-int8-static": {"path": "q", "int8_layers": rows, "int8_check": check}}
    (tmp_path / "quantize" / "stage.json").write_text(json.dumps({"metrics": metrics}))
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--layers"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "pruned-int8-static:" and "int8/float [95%]" in lines[1]
    assert lines[3].split() == [
        "conv1",
        "Conv",
        "0.0200",
        "0.0400",
        "2.00x",
        "[1.90,",
        "2.10]",
        "float",
    ]
    assert lines[4].split()[-1] == "yes"
    assert lines[5] == (
        "whole files against float: int8 on the faster layers 0.90x [0.80, 0.95]; "
        "on every layer 1.40x [0.80, 0.95]; written: faster"
    )
