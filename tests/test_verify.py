"""Verify: each artifact measured in onnxruntime from its own metadata, against PyTorch."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import lzma

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.config import VerifyConfig
from compress.encode.cost import count_macs, initializer_bytes, session_weight_bytes
from compress.encode.memory import activation_memory, measured_ram_bytes
from compress.encode.onnx_tools import get_metadata, parameter_counts
from compress.results import Artifact
from compress.stages.verify import (
    add_latencies,
    interleaved_latency_ms,
    latency_ms,
    logit_tolerance,
    make_session,
    prepare_inputs,
    run_batches,
    verify_artifact,
)

# verify writes the memory keys too (optional only because older reports lack them)
MEMORY_KEYS = {
    "flash_bytes",
    "peak_activation_bytes",
    "peak_activation_tensors",
    "ram_bytes",
    "measured_ram_bytes",
}
ROW_KEYS = Artifact.__required_keys__ | MEMORY_KEYS  # the report adds the others
CONFIG = VerifyConfig(repetitions=20, throughput_batch=200, measure_ram=False)


@pytest.fixture(scope="module")
def reference(pruned_export, tiny_data) -> np.ndarray:
    """PyTorch logits of the exported model on the whole test split."""
    with torch.no_grad():
        return pruned_export.model(tiny_data.tensors("test")[0]).numpy()


def pixels_and_labels(tiny_data) -> tuple[np.ndarray, np.ndarray]:
    return tiny_data.images["test"].numpy(), tiny_data.labels["test"].numpy()


def test_inputs_are_prepared_from_the_file_s_metadata_alone(pruned_export, tiny_data):
    metadata = get_metadata(onnx.load(str(pruned_export.path)))
    pixels, _ = pixels_and_labels(tiny_data)
    x = prepare_inputs(pixels, metadata)
    assert x.dtype == np.float32 and x.shape == (len(pixels), 1, 28, 28)
    np.testing.assert_allclose(x, tiny_data.tensors("test")[0].numpy(), rtol=0, atol=1e-5)
    other = {"preprocessing": json.dumps({"scale": 1.0, "mean": 0.0, "std": 2.0})}
    np.testing.assert_array_equal(
        prepare_inputs(pixels[:2], other), pixels[:2].astype(np.float32) / 2
    )


def test_a_float_artifact_verifies_ok_against_pytorch(
    pruned_export, tiny_data, reference, tmp_path
):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(
        pruned_export.path, pixels, labels, reference, CONFIG, True, tmp_path / "deploy"
    )
    assert set(row) == ROW_KEYS
    assert row["status"] == "ok"
    assert row["name"] == "pruned" and row["path"] == "pruned.onnx"
    assert row["agreement"] == 1.0
    assert 0 <= row["max_logit_diff"] <= CONFIG.tolerance
    assert row["accuracy"] == float((reference.argmax(1) == labels).mean())
    data = pruned_export.path.read_bytes()
    assert row["bytes"] == len(data)
    assert row["gzip_bytes"] == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert row["gzip_bytes"] < row["bytes"]  # the zeros compress
    params, nonzero = parameter_counts(onnx.load(str(pruned_export.path)))
    assert (row["params"], row["nonzero_params"]) == (params, nonzero)
    weights, nonzero_weights = parameter_counts(
        onnx.load(str(pruned_export.path)), weights_only=True
    )
    assert (row["weights"], row["nonzero_weights"]) == (weights, nonzero_weights)
    assert weights == params - 16 - 10  # the two biases apart
    assert (
        row["sparsity"] == pytest.approx(1 - nonzero_weights / weights, abs=1e-6)
        and row["sparsity"] > 0.3
    )
    assert 0 < row["latency_ms_b1_p50"] <= row["latency_ms_b1_p95"]
    assert row["throughput"] > 0


def test_the_deployable_package_is_the_smaller_one_and_unpacks_to_the_same_file(
    pruned_export, tiny_data, reference, tmp_path
):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(
        pruned_export.path, pixels, labels, reference, CONFIG, True, tmp_path / "deploy"
    )
    data = pruned_export.path.read_bytes()
    packages = {
        ".onnx.gz": (gzip.decompress, "gzip_bytes"),
        ".onnx.xz": (lzma.decompress, "xz_bytes"),
    }
    for suffix, (unpack, key) in packages.items():
        package = tmp_path / "deploy" / f"pruned{suffix}"
        assert package.stat().st_size == row[key]
        assert unpack(package.read_bytes()) == data
    assert row["deploy_bytes"] == min(row["gzip_bytes"], row["xz_bytes"])
    assert row["deploy_bytes"] == row[packages[row["deploy_form"]][1]]
    assert row["deploy_path"] == f"deploy/pruned{row['deploy_form']}"


def test_a_float_artifact_beyond_the_tolerance_is_marked_failed(
    pruned_export, tiny_data, reference, tmp_path
):
    pixels, labels = pixels_and_labels(tiny_data)
    shifted = reference + 1e-2
    row = verify_artifact(pruned_export.path, pixels, labels, shifted, CONFIG, True, tmp_path)
    assert row["status"].startswith("failed: logits differ from PyTorch")
    assert row["max_logit_diff"] == pytest.approx(1e-2, rel=1e-2)
    # A quantized artifact is not held to the float tolerance.
    row = verify_artifact(pruned_export.path, pixels, labels, shifted, CONFIG, False, tmp_path)
    assert row["status"] == "ok"


def test_without_a_reference_agreement_is_not_measured(pruned_export, tiny_data, tmp_path):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(
        pruned_export.path, pixels[:50], labels[:50], None, CONFIG, True, tmp_path
    )
    assert row["agreement"] is None and row["max_logit_diff"] is None
    assert row["status"] == "ok"


def test_batched_inference_returns_every_sample_s_logits(pruned_export, tiny_data, reference):
    session = make_session(pruned_export.path, threads=1)
    x = tiny_data.tensors("test")[0].numpy()
    logits, throughput = run_batches(session, x, batch_size=128)
    assert logits.shape == (len(x), 10)
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-4)
    assert throughput > 0


def test_latency_reports_the_median_and_the_95th_percentile(pruned_export, tiny_data):
    session = make_session(pruned_export.path, threads=1)
    x = tiny_data.tensors("test", limit=5)[0].numpy()
    p50, p95 = latency_ms(session, x, repetitions=30)
    assert 0 < p50 <= p95 < 1000


def test_macs_count_every_matmul_at_its_full_shape(pruned_export):
    # simplenet(hidden=16): 784 -> 16 -> 10, zeros included (the kernels are dense).
    assert count_macs(onnx.load(str(pruned_export.path))) == 784 * 16 + 16 * 10


def test_macs_of_a_convolution_and_a_gemm(tmp_path):
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1, groups=1),
        torch.nn.Conv2d(4, 8, 3, groups=2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 26 * 26, 5),
    ).eval()
    path = tmp_path / "conv.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            conv,
            (torch.zeros(1, 1, 28, 28),),
            dynamo=True,
            input_names=["input"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        )
    onnx.save(program.model_proto, str(path))
    expected = 4 * 28 * 28 * 9 + 8 * 26 * 26 * (2 * 9) + 5 * 8 * 26 * 26
    assert count_macs(onnx.load(str(path))) == expected


def test_weight_bytes_are_the_initializers_a_session_keeps(pruned_export):
    model = onnx.load(str(pruned_export.path))
    held = session_weight_bytes(pruned_export.path)
    # The float weights and biases, 4 bytes each, all of them kept (none folded away).
    assert held >= 4 * (784 * 16 + 16 + 16 * 10 + 10)
    assert held <= initializer_bytes(model) + 64


def test_interleaved_latency_times_every_session_and_flags_the_slow_one(
    pruned_export, tiny_data, tmp_path
):
    fast = make_session(pruned_export.path, threads=1)
    x = tiny_data.tensors("test", limit=5)[0].numpy()
    timings = interleaved_latency_ms([fast, fast], [x, x], repetitions=40, rounds=4)
    assert len(timings) == 2 and all(0 < p50 <= p95 < 1000 for p50, p95 in timings)

    class Slow:  # a session that sleeps 2 ms per call
        def __init__(self, inner):
            self.inner = inner

        def get_inputs(self):
            return self.inner.get_inputs()

        def run(self, *args):
            import time

            time.sleep(0.002)
            return self.inner.run(*args)

    rows = [{"name": "dense"}, {"name": "same"}, {"name": "slow"}]
    add_latencies(rows, [fast, fast, Slow(fast)], [x, x, x], VerifyConfig(repetitions=20, rounds=4))
    assert rows[0]["latency_vs_dense"] == 1.0 and rows[0]["slower_than_dense"] is False
    assert rows[2]["slower_than_dense"] is True and rows[2]["latency_vs_dense"] > 1.5
    assert rows[2]["latency_ms_b1_p50"] >= 2.0


def test_latency_rounds_show_a_progress_bar_only_when_asked(pruned_export, tiny_data, capsys):
    session = make_session(pruned_export.path, threads=1)
    x = tiny_data.tensors("test", limit=5)[0].numpy()
    interleaved_latency_ms([session], [x], repetitions=8, rounds=4, progress=True)
    bar = capsys.readouterr().err
    assert "latency" in bar and "/4 " in bar and "round" in bar  # rounds done / rounds
    interleaved_latency_ms([session], [x], repetitions=8, rounds=4, progress=False)  # --no-progress
    assert capsys.readouterr().err == ""


def test_the_logit_tolerance_grows_with_the_logits_beyond_one():
    assert logit_tolerance(np.array([[0.2, -0.9]]), 1e-4) == 1e-4
    assert logit_tolerance(np.array([[3.0, -40.0]]), 1e-4) == pytest.approx(4e-3)


def test_flash_is_the_file_and_ram_the_weights_held_plus_the_activation_peak(
    pruned_export, tiny_data, reference, tmp_path
):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(
        pruned_export.path, pixels, labels, reference, CONFIG, True, tmp_path / "deploy"
    )
    assert row["flash_bytes"] == row["bytes"] == pruned_export.path.stat().st_size
    assert row["flash_bytes"] > row["deploy_bytes"]  # the package is unpacked before loading
    peak = activation_memory(onnx.load(str(pruned_export.path)))
    assert row["peak_activation_bytes"] == peak.peak_bytes > 0
    assert sum(t["bytes"] for t in row["peak_activation_tensors"]) == peak.peak_bytes
    assert row["ram_bytes"] == row["weight_bytes"] + row["peak_activation_bytes"]
    assert row["measured_ram_bytes"] is None  # [verify] measure_ram = false


def test_measured_ram_grows_with_the_weights_a_file_holds(tmp_path):
    # Two one-MatMul files, 8 MB of float weights apart: a fresh process holds about that more.
    sizes = {}
    for units in (1, 2000):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1000])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", units])],
            [numpy_helper.from_array(np.ones((1000, units), np.float32), "w")],
        )
        path = tmp_path / f"w{units}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
        sizes[units] = measured_ram_bytes(path)
    assert sizes[1] > 0 and sizes[2000] - sizes[1] > 6_000_000
