"""Trained weight sharing (per-layer codebooks) and its codes + codebook ONNX encoding."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.config import OptimConfig, parse_pipeline
from compress.encode.codebook import (
    code_entropy_bits,
    decode_positions,
    encode_codebook,
    gaps_and_codes,
)
from compress.encode.onnx_tools import artifact_metadata, compact_names, parameter_counts
from compress.errors import CompressError, ConfigError
from compress.pruning import apply_masks, make_permanent
from compress.sharing import CODEBOOK, WeightSharing, code_entropy, kmeans_1d
from compress.stages.export import export_onnx
from compress.training import evaluate, fit


def test_kmeans_finds_well_separated_clusters():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.2), torch.full((20,), 2.0)])
    values = values + 0.01 * torch.randn(100, generator=torch.Generator().manual_seed(0))
    centroids, assign = kmeans_1d(values, 3)
    torch.testing.assert_close(centroids, torch.tensor([-1.0, 0.2, 2.0]), atol=0.01, rtol=0)
    assert torch.bincount(assign).tolist() == [50, 30, 20]


def test_code_entropy_counts_bits_per_non_zero():
    assert code_entropy(torch.tensor([0, 0, 1, 2, 3, 4])) == pytest.approx(2.0)
    assert code_entropy(torch.tensor([0, 1, 1, 1])) == 0.0


def shared_model(pruned_export, tiny_data, fit_settings, bits: int = 2, epochs: int = 1):
    """The pruned test model, its masks re-attached, weight-shared and trained."""
    model = copy.deepcopy(pruned_export.model)
    apply_masks(model, pruned_export.masks)
    sharing = WeightSharing(model, bits)
    before = {n: getattr(m, CODEBOOK).detach().clone() for n, m in sharing.layers.items()}
    fit(model, tiny_data, OptimConfig(epochs=epochs, lr=0.01), fit_settings(), desc="share")
    return model, sharing, before


def test_training_moves_the_levels_and_holds_the_codes_and_the_zeros(
    pruned_export, tiny_data, fit_settings
):
    model, sharing, before = shared_model(pruned_export, tiny_data, fit_settings)
    for name, module in sharing.layers.items():
        assert not torch.equal(
            getattr(module, CODEBOOK).detach(), before[name]
        )  # the levels trained
    entropy = sharing.entropy()
    assert 0 < entropy["code_entropy_bits"] <= np.log2(3) + 1e-6
    sharing.bake(model)
    make_permanent(model)
    assert not any(n.endswith(CODEBOOK) for n, _ in model.named_parameters())
    for name, mask in pruned_export.masks.items():
        weight = dict(model.named_modules())[name].weight.detach()
        assert torch.all(weight[~mask] == 0)  # pruned stays pruned
        assert len(torch.unique(weight[weight != 0])) <= 3  # 2 bits: zero + 3 levels
    assert evaluate(model, tiny_data, "test", 500, "cpu") > 0.5


def test_gaps_bridge_long_runs_of_zeros_and_round_trip():
    values = np.zeros(2000, np.float32)
    values[[0, 1, 300, 1999]] = [0.5, -0.25, 0.5, 1.0]
    codebook = np.array([0.0, -0.25, 0.5, 1.0], np.float32)
    gaps, codes = gaps_and_codes(values, codebook)
    assert gaps.dtype == codes.dtype == np.uint8
    assert (codes != 0).sum() == 4 and len(codes) > 4  # bridges carry code 0
    rebuilt = np.zeros_like(values)
    rebuilt[decode_positions(gaps)] = codebook[codes]
    np.testing.assert_array_equal(rebuilt, values)


def test_the_codebook_file_gives_the_same_logits_and_is_smaller(
    pruned_export, tiny_data, fit_settings, tmp_path
):
    model, sharing, _ = shared_model(pruned_export, tiny_data, fit_settings, bits=3, epochs=0)
    sharing.bake(model)
    make_permanent(model)
    path = tmp_path / "pruned.onnx"
    metadata = artifact_metadata(
        tiny_data.preprocessing, list(tiny_data.classes), "simplenet", "pruned"
    )
    export_onnx(model, tiny_data.input_shape, path, opset=18, metadata=metadata)
    proto = onnx.load(str(path))
    params_before = parameter_counts(proto)
    stats = encode_codebook(proto)
    assert set(stats) == {
        n.name for n in onnx.load(str(path)).graph.initializer if numpy_helper.to_array(n).ndim == 2
    }  # both weight matrices; biases have many values
    assert 0 < code_entropy_bits(stats) <= np.log2(7) + 1e-6
    onnx.checker.check_model(proto, full_check=True)
    encoded = tmp_path / "pruned-codebook.onnx"
    onnx.save_model(proto, str(encoded))
    assert encoded.stat().st_size < path.stat().st_size / 3
    assert parameter_counts(proto) == params_before
    x = tiny_data.tensors("test")[0].numpy()
    logits = {}
    for p in (path, encoded):
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        logits[p.name] = session.run(None, {"input": x})[0]
    np.testing.assert_array_equal(logits["pruned.onnx"], logits["pruned-codebook.onnx"])
    # Short names (as the codebook variant is written) change neither the counts nor the logits.
    compact_names(proto)
    assert parameter_counts(proto) == params_before
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], logits["pruned.onnx"])


def matrix_with_one_run_per_column(rows: int = 400, cols: int = 40) -> np.ndarray:
    """[in, out] with each output unit reading one run of 12 inputs at a random place: cheap
    to walk column by column (gaps of 1), irregular row by row."""
    rng = np.random.default_rng(0)
    array = np.zeros((rows, cols), np.float32)
    for j, start in enumerate(rng.integers(0, rows - 12, cols)):
        array[start : start + 12, j] = rng.choice([-0.5, 0.25, 0.75], 12)
    return array


@pytest.mark.parametrize("transpose", [False, True])
def test_a_matrix_is_walked_in_its_cheaper_order_and_rebuilt_exactly(transpose):
    weight = matrix_with_one_run_per_column()
    weight = (
        weight.T.copy() if transpose else weight
    )  # runs along rows: the row walk is the cheap one
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", weight.shape[0]])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", weight.shape[1]])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "g",
        [x],
        [y],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    encode_codebook(model)
    onnx.checker.check_model(model, full_check=True)
    assert ("Transpose" in [n.op_type for n in model.graph.node]) != transpose
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rebuilt = session.run(None, {"input": np.eye(weight.shape[0], dtype=np.float32)})[
        0
    ]  # I @ W = W
    np.testing.assert_array_equal(rebuilt, weight)


def test_the_codebook_variant_needs_weight_sharing():
    with pytest.raises(ConfigError, match="needs \\[finetune\\] share.bits"):
        parse_pipeline({"quantize": {"variants": ["codebook"]}}, "x")
    config = parse_pipeline(
        {"quantize": {"variants": ["codebook"]}, "finetune": {"share": {"bits": 3}}}, "x"
    )
    assert config.finetune.share.bits == 3


def test_a_codebook_of_a_model_that_was_not_shared_is_refused(pruned_export, tmp_path):
    from compress.variants.codebook import write_codebook

    with pytest.raises(CompressError, match="no weight-shared tensor"):
        write_codebook(pruned_export.path, tmp_path / "pruned-codebook.onnx")
    assert not (tmp_path / "pruned-codebook.onnx").exists()


def test_biases_can_share_too(pruned_export, tiny_data, fit_settings):
    model = copy.deepcopy(pruned_export.model)
    apply_masks(model, pruned_export.masks)
    sharing = WeightSharing(model, bits=2, biases=True)
    fit(model, tiny_data, OptimConfig(epochs=1, lr=0.01), fit_settings(), desc="share")
    sharing.bake(model)
    make_permanent(model)
    assert len(torch.unique(model.net[1].bias.detach())) <= 4
    assert not any("codebook" in n or "codes" in n for n in model.state_dict())
    assert evaluate(model, tiny_data, "test", 500, "cpu") > 0.5


@pytest.mark.slow
def test_a_pipeline_learns_masks_with_distillation_shares_weights_and_writes_a_codebook_file(
    pipeline_file, tmp_path
):
    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline

    path = pipeline_file(
        {
            "prune": {
                "method": "variational",
                "variational": {"epochs": 1, "lr": 3e-3, "kl_ramp": 0.3, "distill": {"alpha": 0.5}},
            },
            "finetune.distill": {"alpha": 0.5},
            "finetune.share": {"bits": 3, "epochs": 1, "lr": 1e-3, "biases": True},
            "quantize.variants": ["codebook"],
        }
    )
    report = run_pipeline(load_pipeline(path), out_dir=tmp_path / "run", progress=False)
    rows = {a["name"]: a for a in report["artifacts"]}
    pruned, codebook = rows["pruned"], rows["pruned-codebook"]
    assert pruned["sparsity"] > 0.3  # learned by variational dropout
    assert codebook["status"] == "ok" and codebook["max_logit_diff"] <= 1e-4  # the same weights
    assert codebook["accuracy"] == pruned["accuracy"]
    assert codebook["nonzero_params"] == pruned["nonzero_params"]
    assert 0 < codebook["code_entropy_bits"] <= np.log2(7) + 1e-6
    assert codebook["bytes"] < pruned["bytes"] / 4
    finetune = next(s for s in report["stages"] if s["name"] == "finetune")
    assert finetune["cached"] is False


def test_weight_sharing_as_a_modifier_is_baked_in_at_the_end_of_training(
    pruned_export, tiny_data, fit_settings
):
    model = copy.deepcopy(pruned_export.model)
    apply_masks(model, pruned_export.masks)
    sharing = WeightSharing(model, bits=2, biases=True)
    fit(
        model,
        tiny_data,
        OptimConfig(epochs=1, lr=0.01),
        fit_settings(),
        desc="share",
        modifiers=[sharing],
    )
    assert not any("codebook" in n or "codes" in n for n in model.state_dict())
    assert len(torch.unique(model.net[1].weight.detach())) <= 4  # 3 levels and the exact zero
    assert 0 < sharing.entropy()["code_entropy_bits"] <= np.log2(3) + 1e-6  # kept from the codes
    make_permanent(model)
    assert all(
        not torch.any(model.get_submodule(n).weight[~m]) for n, m in pruned_export.masks.items()
    )


def test_a_bias_gets_its_own_all_ones_mask_beside_a_masked_weight():
    from compress.pruning.masks import ensure_masked, recompute

    layer = torch.nn.Linear(3, 2)
    ensure_masked(layer)
    ensure_masked(layer, "bias")  # the weight's mask does not stand for the bias
    assert {n for n, _ in layer.named_buffers()} == {"weight_mask", "bias_mask"}
    with torch.no_grad():
        layer.bias_orig.fill_(2.0)
    recompute(layer, "bias")
    assert layer.bias.tolist() == [2.0, 2.0]
