"""Verify: each artifact measured in onnxruntime from its own metadata, against PyTorch."""

from __future__ import annotations

import gzip
import json
import lzma

import numpy as np
import onnx
import pytest
import torch

from compress.config import VerifyConfig
from compress.encode.onnx_tools import get_metadata, parameter_counts
from compress.stages.verify import (
    latency_ms,
    make_session,
    prepare_inputs,
    run_batches,
    verify_artifact,
)

ROW_KEYS = {
    "name", "path", "bytes", "gzip_bytes", "xz_bytes", "deploy_bytes", "deploy_form", "deploy_path",
    "params", "nonzero_params", "sparsity", "accuracy", "val_accuracy", "agreement", "max_logit_diff",
    "latency_ms_b1_p50", "latency_ms_b1_p95", "throughput", "status", "min_onnxruntime", "ir_version", "opset",
    "weights", "nonzero_weights",
}
CONFIG = VerifyConfig(repetitions=20, throughput_batch=200)


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
    np.testing.assert_array_equal(prepare_inputs(pixels[:2], other), pixels[:2].astype(np.float32) / 2)


def test_a_float_artifact_verifies_ok_against_pytorch(pruned_export, tiny_data, reference, tmp_path):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(pruned_export.path, pixels, labels, reference, CONFIG, True, tmp_path / "deploy")
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
    weights, nonzero_weights = parameter_counts(onnx.load(str(pruned_export.path)), weights_only=True)
    assert (row["weights"], row["nonzero_weights"]) == (weights, nonzero_weights)
    assert weights == params - 16 - 10  # the two biases apart
    assert row["sparsity"] == pytest.approx(1 - nonzero_weights / weights, abs=1e-6) and row["sparsity"] > 0.3
    assert 0 < row["latency_ms_b1_p50"] <= row["latency_ms_b1_p95"]
    assert row["throughput"] > 0


def test_the_deployable_package_is_the_smaller_one_and_unpacks_to_the_same_file(
    pruned_export, tiny_data, reference, tmp_path
):
    pixels, labels = pixels_and_labels(tiny_data)
    row = verify_artifact(pruned_export.path, pixels, labels, reference, CONFIG, True, tmp_path / "deploy")
    data = pruned_export.path.read_bytes()
    packages = {".onnx.gz": (gzip.decompress, "gzip_bytes"), ".onnx.xz": (lzma.decompress, "xz_bytes")}
    for suffix, (unpack, key) in packages.items():
        package = tmp_path / "deploy" / f"pruned{suffix}"
        assert package.stat().st_size == row[key]
        assert unpack(package.read_bytes()) == data
    assert row["deploy_bytes"] == min(row["gzip_bytes"], row["xz_bytes"])
    assert row["deploy_bytes"] == row[packages[row["deploy_form"]][1]]
    assert row["deploy_path"] == f"deploy/pruned{row['deploy_form']}"


def test_a_float_artifact_beyond_the_tolerance_is_marked_failed(pruned_export, tiny_data, reference, tmp_path):
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
    row = verify_artifact(pruned_export.path, pixels[:50], labels[:50], None, CONFIG, True, tmp_path)
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
