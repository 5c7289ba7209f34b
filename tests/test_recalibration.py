"""Every model a training stage hands on has BatchNorm statistics measured on its final
weights: a model whose running averages trailed far behind (a small momentum, a short run)
is restored before export, and a model without BatchNorm is left bit for bit as it was."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from compress.config import load_pipeline
from compress.pipeline import run_pipeline
from compress.pruning import batchnorm
from compress.pruning.batchnorm import recalibrate_on_training_data
from compress.qat import fake_quantize
from compress.registry import build_model
from compress.stages.finetune import recalibrate

# A BatchNorm whose running statistics barely move (momentum 0.001: one epoch of 63 steps
# takes them 6% of the way) after a layer whose outputs are far from mean 0, variance 1:
# training (batch statistics) learns, while evaluation with the running statistics sees
# every unit shifted by over 100 of their standard deviations (about 23% test accuracy,
# against 83% with the statistics measured again).
STALE_NET = """
import torch
import torch.nn as nn
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.bn = nn.BatchNorm1d(32, momentum=0.001)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        hidden = self.fc1(x.flatten(1)) * 30 + 1000
        return self.fc2(torch.relu(self.bn(hidden)))
"""


@pytest.fixture
def stale_run(pipeline_file, tmp_path):
    (tmp_path / "stale.py").write_text(STALE_NET)
    config = load_pipeline(
        pipeline_file(
            {
                "model": {"path": str(tmp_path / "stale.py"), "class": "Net"},
                "quantize.variants": ["dynamic"],
            }
        )
    )
    run_dir = tmp_path / "run"
    return run_pipeline(config, out_dir=run_dir, progress=False), run_dir


def test_the_dense_model_is_exported_with_statistics_measured_on_its_final_weights(stale_run):
    report, run_dir = stale_run
    train = stage_metrics(run_dir, "train")
    # Measured at the end of the epoch with the running statistics: far below what training saw.
    assert train["epochs"][-1]["test_accuracy"] < 0.5 < train["epochs"][-1]["train_accuracy"]
    assert train["batchnorm_recalibration_samples"] == 1024
    dense = next(a for a in report["artifacts"] if a["name"] == "dense")  # onnxruntime, verify
    assert dense["accuracy"] > 0.75 and dense["status"] == "ok"
    assert report["training"]["dense_test_accuracy"] == pytest.approx(dense["accuracy"], abs=0.01)
    # Fine-tuning starts from statistics the prune stage measured, which its small momentum
    # barely moves: measured again or kept, whichever is right on more validation images.
    finetune = stage_metrics(run_dir, "finetune")
    assert finetune["batchnorm_recalibration_samples"] in (0, 1024)
    assert all(a["status"] == "ok" and a["accuracy"] > 0.75 for a in report["artifacts"])


def stage_metrics(run_dir, stage: str) -> dict:
    return json.loads((run_dir / stage / "stage.json").read_text())["metrics"]


def test_a_model_without_batchnorm_is_not_touched(tiny_data):
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.get_rng_state()
    assert recalibrate_on_training_data(model, tiny_data, 32) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(generator, torch.get_rng_state())


def test_a_last_batch_of_one_sample_is_left_out(tiny_data):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4), nn.BatchNorm1d(4))
    assert recalibrate_on_training_data(model, tiny_data, 32, samples=65) == 64  # 32 + 32, not + 1


def test_after_quantization_aware_fine_tuning_the_statistics_are_those_of_the_quantized_weights(
    tiny_data,
):
    # The quantized files fold BatchNorm into weights they hold at qat_bits: the statistics
    # must be measured on the outputs of those weights, not of the float ones.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))
    fake, float_stats = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        fake[1].weight.copy_(fake_quantize(fake[1].weight, 2))

    recalibrate(model, tiny_data, 32, qat_bits=2, keep_better=False)
    recalibrate_on_training_data(fake, tiny_data, 32)  # by hand: the weights quantized first
    assert torch.allclose(model[2].running_mean, fake[2].running_mean, atol=1e-5)
    assert torch.allclose(model[2].running_var, fake[2].running_var, rtol=1e-4)

    recalibrate(float_stats, tiny_data, 32, qat_bits=0, keep_better=False)
    assert not torch.allclose(float_stats[2].running_mean, model[2].running_mean, atol=1e-3)
    # The model itself keeps its float weights and no quantization hooks.
    assert not torch.equal(model[1].weight, fake[1].weight)
    assert not model[1]._forward_pre_hooks or all(
        isinstance(h, prune.BasePruningMethod) for h in model[1]._forward_pre_hooks.values()
    )


def test_statistics_are_measured_on_samples_drawn_across_a_split_listed_class_by_class(
    tiny_data,
):
    # Image and sound folders list their files class by class: the first samples of the
    # training split are one or two classes, whose statistics are not the split's.
    order = torch.argsort(tiny_data.labels["train"], stable=True)
    ordered = copy.copy(tiny_data)
    ordered.images = {**tiny_data.images, "train": tiny_data.images["train"][order]}
    ordered.labels = {**tiny_data.labels, "train": tiny_data.labels["train"][order]}
    count = len(order) // 4
    drawn = ordered.spread_index("train", count)
    assert len(ordered.labels["train"][:count].unique()) <= 4
    assert len(ordered.labels["train"][drawn].unique()) == 10
    assert torch.equal(drawn, ordered.spread_index("train", count))  # the same every run
    assert ordered.spread_index("train", len(order)) == slice(None)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8))
    assert recalibrate_on_training_data(model, ordered, 32, samples=count) == count
    with torch.no_grad():
        outputs = model[1](ordered.tensors("train")[0].flatten(1))
        first = model[1](ordered.tensors("train", limit=count)[0].flatten(1)).mean(0)
    whole = outputs.mean(0)
    assert (model[2].running_mean - whole).abs().max() < 0.5 * (first - whole).abs().max()


@pytest.mark.parametrize(
    "before, after, kept", [(900, 800, True), (800, 900, False), (850, 850, False)]
)
def test_the_statistics_right_on_more_validation_images_are_kept(
    tiny_data, monkeypatch, before, after, kept
):
    # Statistics measured again are an estimate too: where the running ones are right on
    # more validation images they stay, exactly; on a tie the measured ones are used.
    counts = iter([before, after])
    monkeypatch.setattr(batchnorm, "_val_accuracy", lambda *args: next(counts) / 1000)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10))
    running = copy.deepcopy(model[2].state_dict())
    used = recalibrate_on_training_data(model, tiny_data, 32, samples=64, keep_better=True)
    assert used == (0 if kept else 64)
    same = all(torch.equal(v, model[2].state_dict()[k]) for k, v in running.items())
    assert same is kept


def test_stale_running_statistics_are_replaced_even_when_keeping_the_better(tiny_data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10))
    with torch.no_grad():
        model[1].bias.add_(50.0)  # outputs far from the running mean of 0
    assert recalibrate_on_training_data(model, tiny_data, 32, keep_better=True) > 0
