"""Properties of pruning that must hold for any weights, masks and settings (hypothesis):

- pruning only ever removes weights: a mask never gives back what an earlier one took;
- pruned weights stay exactly zero (+0.0) through fine-tuning, export and quantization.

test_integrity.py checks on a finished run that the sparsity it reports is the zeros
counted in the ONNX files it wrote. Example counts are small: each example trains,
exports or quantizes a real (tiny) model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.utils.prune as tprune
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from tiny_mnist import tiny_arrays

from compress.config import FinetuneConfig, L1Config, PruneConfig, QuantizeConfig
from compress.data import DATASETS, Dataset
from compress.pruning import apply_masks, make_permanent, masks_of, prunable_layers, prune_oneshot
from compress.registry import build_model
from compress.stages.export import export_onnx
from compress.stages.quantize import write_variant
from compress.training import RunSettings, fit

seeds = st.integers(0, 2**16)


def tiny_model(seed: int, hidden: int = 8):
    torch.manual_seed(seed)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": hidden})


def random_masks(model, seed: int, density: float) -> dict[str, torch.Tensor]:
    """A keep-mask per prunable layer, keeping about `density` of the weights."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(m.weight.shape, generator=g) < density
        for name, m in prunable_layers(model).items()
    }


def onnx_weights(model: onnx.ModelProto) -> dict[tuple[int, ...], np.ndarray]:
    """The 2-D initializers (weight matrices, stored [in, out]: float, or int8/int4 when
    quantized) by shape, as float32 or int32 arrays."""
    found = {}
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2:
            assert array.shape not in found, f"two weights of shape {array.shape}"
            found[array.shape] = array if array.dtype == np.float32 else array.astype(np.int32)
    return found


@pytest.fixture(scope="module")
def small_data() -> Dataset:
    """200 training, 50 validation and 100 test images of real MNIST, in memory."""
    arrays = tiny_arrays()
    spec = DATASETS["mnist"]

    def split(role: str, start: int, stop: int):
        images = torch.from_numpy(arrays[f"{role}-images"][start:stop].copy()).unsqueeze(1)
        return images, torch.from_numpy(arrays[f"{role}-labels"][start:stop].astype(np.int64))

    (xtr, ytr), (xva, yva), (xte, yte) = (
        split("train", 0, 200),
        split("train", 200, 250),
        split("test", 0, 100),
    )
    return Dataset(
        "mnist",
        {"train": xtr, "val": xva, "test": xte},
        {"train": ytr, "val": yva, "test": yte},
        spec.classes,
        spec.mean,
        spec.std,
    )


# --- pruning


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    threshold=st.floats(0.0, 0.05),
    amounts=st.lists(st.floats(0.0, 0.95), min_size=1, max_size=4),
    scope=st.sampled_from(["global", "layer"]),
    noise=st.floats(0.0, 0.2),
)
def test_pruning_only_ever_removes_weights(seed, threshold, amounts, scope, noise):
    """Threshold, then magnitude steps (in any order of amounts), with training-like changes
    to the underlying weights in between: a pruned weight is never given back."""
    model = tiny_model(seed)
    layers = prunable_layers(model)
    g = torch.Generator().manual_seed(seed + 1)
    previous = {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in layers.items()}
    steps = [PruneConfig(method="threshold", threshold=threshold)]
    steps += [PruneConfig(method="magnitude", amount=a, scope=scope) for a in amounts]
    for config in steps:
        prune_oneshot(model, config)
        masks = masks_of(model)
        for name, module in layers.items():
            assert not (masks[name] & ~previous[name]).any(), f"{name}: a pruned weight came back"
            assert (module.weight[~masks[name]] == 0).all()
        if config.method == "threshold":
            for name, module in layers.items():
                kept = module.weight_orig[masks[name]]
                assert (kept.abs() > threshold).all()
        else:
            pools = [[n] for n in layers] if scope == "layer" else [list(layers)]
            for pool in pools:
                zeros = sum(int((~masks[n]).sum()) for n in pool)
                total = sum(masks[n].numel() for n in pool)
                assert zeros >= round(config.amount * total)
        previous = masks
        with torch.no_grad():  # what training does to the weights between steps
            for module in layers.values():
                module.weight_orig.add_(noise * torch.randn(module.weight_orig.shape, generator=g))


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    density=st.floats(0.05, 0.95),
    optimizer=st.sampled_from(["sgd", "adam", "adamw"]),
    momentum=st.sampled_from([0.0, 0.9]),
    weight_decay=st.sampled_from([0.0, 1e-2]),
    l1=st.sampled_from([("penalty", 0.0), ("penalty", 1e-3), ("proximal", 1e-3)]),
    qat_bits=st.sampled_from([0, 4, 8]),
)
def test_pruned_weights_stay_exactly_zero_through_finetuning(
    small_data, seed, density, optimizer, momentum, weight_decay, l1, qat_bits
):
    model = tiny_model(seed)
    masks = random_masks(model, seed, density)
    apply_masks(model, masks)
    extra = {"qat_bits": qat_bits} if qat_bits else {}
    config = FinetuneConfig(
        epochs=1,
        lr=0.05,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        l1=L1Config(method=l1[0], **{"lambda": l1[1]}),
        **extra,
    )
    run = RunSettings(
        device=torch.device("cpu"), batch_size=50, eval_batch_size=100, seed=seed, progress=False
    )
    before = {name: m.weight.detach().clone() for name, m in prunable_layers(model).items()}
    fit(model, small_data, config, run, desc="finetune")
    make_permanent(model)
    for name, module in prunable_layers(model).items():
        assert not tprune.is_pruned(module)
        pruned = module.weight.detach()[~masks[name]]
        assert (pruned == 0).all() and not torch.signbit(pruned).any(), (
            f"{name}: pruned weights moved"
        )
    # At low density every hidden ReLU can be off for the whole epoch, leaving the first layer
    # without gradient; the model as a whole must still have trained.
    layers = prunable_layers(model)
    assert any(not torch.equal(layers[n].weight.detach(), before[n]) for n in layers), (
        "nothing was trained"
    )


# --- export and quantization


@pytest.mark.slow
@settings(max_examples=3, deadline=None)
@given(seed=seeds, density=st.floats(0.0, 1.0))
def test_export_and_quantization_keep_pruned_weights_zero(
    tmp_path_factory, small_data, seed, density
):
    """Each float weight reaches the ONNX file unchanged ([in, out], zeros as +0.0), and a
    pruned weight is a stored 0 with a zero point of 0 in every quantized variant."""
    folder = tmp_path_factory.mktemp("export")
    model = tiny_model(seed)
    masks = random_masks(model, seed, density)
    apply_masks(model, masks)
    with torch.no_grad():  # half the pruned entries become -0.0 (= -w * 0), to be written as +0.0
        for module in prunable_layers(model).values():
            module.weight_orig.neg_()
    make_permanent(model)
    path = folder / "pruned.onnx"
    export_onnx(model, small_data.input_shape, path, opset=18, metadata={"variant": "pruned"})
    exported = onnx_weights(onnx.load(str(path)))
    expected = {
        tuple(m.weight.T.shape): m.weight.detach().T.numpy()
        for m in prunable_layers(model).values()
    }
    assert exported.keys() == expected.keys()
    for shape, weight in expected.items():
        assert np.array_equal(exported[shape], weight)
        assert not np.signbit(exported[shape][weight == 0]).any()

    calibration = small_data.tensors("train", limit=64)[0].numpy()
    for variant in ("dynamic", "static", "static-int4"):
        target = folder / f"{variant}.onnx"
        write_variant(path, target, variant, QuantizeConfig(), calibration)
        quantized = onnx.load(str(target))
        weights = onnx_weights(quantized)
        for shape, weight in expected.items():
            assert (weights[shape][weight == 0] == 0).all(), f"{variant}: a pruned weight is not 0"
        for init in quantized.graph.initializer:
            if (
                init.name.endswith("zero_point") and init.data_type != onnx.TensorProto.UINT8
            ):  # weights
                assert not numpy_helper.to_array(init).any(), (
                    f"{variant}: weight zero point {init.name} is not 0"
                )
