"""Quantized variants: every registered variant writes a file that runs in onnxruntime far
above chance and counts the float model's parameters; the int8 ones keep the accuracy close,
and the quantizer's keep every pruned weight an exact stored zero and the metadata."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from compress.config import QuantizeConfig
from compress.encode.onnx_tools import artifact_metadata, get_metadata, parameter_counts
from compress.pruning import apply_masks, make_permanent
from compress.sharing import WeightSharing
from compress.stages.export import export_onnx
from compress.stages.quantize import variant_name, write_variant
from compress.variants import list_variants
from compress.variants.quantizer import ArrayReader, QuantizerVariant

# The variants onnxruntime.quantization writes (their tensors are `<name>_quantized`).
VARIANTS = [name for name, v in list_variants().items() if issubclass(v, QuantizerVariant)]
INT8_VARIANTS = ["dynamic", "static"]


@pytest.fixture(scope="module")
def quantized(pruned_export, tiny_data, tmp_path_factory):
    """variant -> path of the pruned fixture model quantized that way."""
    folder = tmp_path_factory.mktemp("quantized")
    calibration = tiny_data.tensors("train", limit=128)[0].numpy()
    paths = {}
    for variant in VARIANTS:
        path = folder / f"{variant_name('pruned', variant)}.onnx"
        write_variant(pruned_export.path, path, variant, QuantizeConfig(), calibration)
        paths[variant] = path
    return paths


@pytest.fixture(scope="module")
def shared_export(pruned_export, tiny_data, tmp_path_factory):
    """The pruned fixture model weight-shared (3 bits, untrained levels) and exported: a
    source every variant takes (codebook needs shared weights)."""
    model = copy.deepcopy(pruned_export.model)
    apply_masks(model, pruned_export.masks)
    WeightSharing(model, 3).bake(model)
    make_permanent(model)
    path = tmp_path_factory.mktemp("shared") / "pruned.onnx"
    metadata = artifact_metadata(
        tiny_data.preprocessing, list(tiny_data.classes), "simplenet", "pruned"
    )
    export_onnx(model.eval(), tiny_data.input_shape, path, opset=18, metadata=metadata)
    return path


@pytest.mark.parametrize("variant", list(list_variants()))
def test_every_variant_writes_a_file_that_runs_far_above_chance(
    shared_export, tiny_data, tmp_path, variant
):
    target = tmp_path / f"{variant_name('pruned', variant)}.onnx"
    calibration = tiny_data.tensors("train", limit=128)[0].numpy()
    write_variant(shared_export, target, variant, QuantizeConfig(), calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        target.name
    ]  # what it needs went elsewhere
    model = onnx.load(str(target))
    onnx.checker.check_model(model, full_check=True)
    assert get_metadata(model)["variant"] == target.stem
    float_accuracy = accuracy(shared_export, tiny_data)
    assert accuracy(target, tiny_data) > 0.5 and float_accuracy > 0.7
    if list_variants()[variant].lossless:
        assert accuracy(target, tiny_data) == float_accuracy
    float_model = onnx.load(str(shared_export))
    for weights_only in (False, True):
        params, nonzero = parameter_counts(model, weights_only=weights_only)
        float_params, float_nonzero = parameter_counts(float_model, weights_only=weights_only)
        assert params == float_params and 0 < nonzero <= float_nonzero


def accuracy(path, tiny_data) -> float:
    x, y = tiny_data.tensors("test")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x.numpy()})[0]
    return float((logits.argmax(1) == y.numpy()).mean())


def test_variant_names_follow_the_documented_scheme():
    assert variant_name("pruned", "dynamic") == "pruned-int8-dynamic"
    assert variant_name("pruned", "static") == "pruned-int8-static"
    assert variant_name("dense", "static-int4") == "dense-int4-static"


@pytest.mark.parametrize("variant", VARIANTS)
def test_quantized_variants_run_in_onnxruntime_at_any_batch_size(quantized, tiny_data, variant):
    sess = ort.InferenceSession(str(quantized[variant]), providers=["CPUExecutionProvider"])
    x, _ = tiny_data.tensors("test", limit=7)
    for batch in (1, 7):
        (logits,) = sess.run(None, {"input": x[:batch].numpy()})
        assert logits.shape == (batch, 10)
        assert np.isfinite(logits).all()
    onnx.checker.check_model(onnx.load(str(quantized[variant])), full_check=True)


@pytest.mark.parametrize("variant", INT8_VARIANTS)
def test_int8_variants_keep_the_accuracy_close(quantized, pruned_export, tiny_data, variant):
    float_accuracy = accuracy(pruned_export.path, tiny_data)
    assert float_accuracy > 0.7  # a model worth quantizing
    assert abs(accuracy(quantized[variant], tiny_data) - float_accuracy) <= 0.02


def test_int4_variant_stays_far_above_chance(quantized, tiny_data):
    assert accuracy(quantized["static-int4"], tiny_data) > 0.5


@pytest.mark.parametrize("variant", INT8_VARIANTS)
def test_int8_logits_follow_the_float_model(quantized, pruned_export, tiny_data, variant):
    x, _ = tiny_data.tensors("test")
    with torch.no_grad():
        reference = pruned_export.model(x).numpy()
    sess = ort.InferenceSession(str(quantized[variant]), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x.numpy()})[0]
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("variant", VARIANTS)
def test_pruned_weights_stay_zero_through_quantization(quantized, pruned_export, variant):
    model = onnx.load(str(quantized[variant]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, keep in pruned_export.masks.items():
        stored = inits[f"{name}.weight_quantized"].T  # [in, out] like the float export
        zero_point = inits[f"{name}.weight_zero_point"]
        assert (zero_point == 0).all()  # symmetric: a stored 0 is the value 0
        assert (stored[~keep.numpy()] == 0).all()
    float_params, float_nonzero = parameter_counts(onnx.load(str(pruned_export.path)))
    weights = sum(int(keep.numel()) for keep in pruned_export.masks.values())
    pruned = sum(int((~keep).sum()) for keep in pruned_export.masks.values())
    quant_weight_zeros = sum(
        int((inits[f"{name}.weight_quantized"] == 0).sum()) for name in pruned_export.masks
    )
    assert quant_weight_zeros >= pruned
    params, nonzero = parameter_counts(model)
    assert params == float_params
    assert nonzero <= float_nonzero
    assert weights - quant_weight_zeros <= float_nonzero


@pytest.mark.parametrize("variant", VARIANTS)
def test_quantized_files_keep_the_metadata_and_name_their_variant(
    quantized, pruned_export, variant
):
    source = get_metadata(onnx.load(str(pruned_export.path)))
    metadata = get_metadata(onnx.load(str(quantized[variant])))
    assert json.loads(metadata["preprocessing"]) == json.loads(source["preprocessing"])
    assert json.loads(metadata["labels"]) == json.loads(source["labels"])
    assert metadata["model"] == source["model"]
    assert metadata["variant"] == variant_name("pruned", variant)


def test_quantized_files_are_self_contained_and_smaller(quantized, pruned_export):
    folder = next(iter(quantized.values())).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in quantized.values())
    float_bytes = pruned_export.path.stat().st_size
    for variant in INT8_VARIANTS:
        assert quantized[variant].stat().st_size < float_bytes / 2


def test_the_calibration_reader_feeds_every_image_once_per_pass():
    images = np.arange(10 * 4, dtype=np.float32).reshape(10, 1, 2, 2)
    reader = ArrayReader(images, batch_size=4)
    batches = list(iter(reader.get_next, None))
    assert [b["input"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), images)
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input"], images[:4])
