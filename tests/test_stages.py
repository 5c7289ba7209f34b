"""Stages handing models to each other: quantization-aware training in the train stage, and
the tool's own errors (one line, the right exit status) when a stage's output is wrong."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from compress.checkpoint import load_checkpoint, safe_load, save_checkpoint
from compress.cli import main
from compress.config import load_pipeline
from compress.encode import onnx_tools
from compress.errors import CompressError, ExportError, IntegrityError
from compress.pipeline import run_pipeline
from compress.pruning import ensure_masked, plain_state_dict, prunable_layers
from compress.registry import build_model
from compress.stages.export import export_onnx


def test_quantization_aware_training_in_the_train_stage_hands_plain_weights_to_prune(
    pipeline_file, tmp_path
):
    config = load_pipeline(pipeline_file({"train.qat_bits": 4}))
    run_dir = tmp_path / "run"
    report = run_pipeline(config, out_dir=run_dir, progress=False, until="prune")
    state = safe_load(run_dir / "train" / "model.pt")["state_dict"]
    assert "net.1.weight" in state and not any(k.endswith(("_orig", "_mask")) for k in state)
    model, masks, _ = load_checkpoint(run_dir / "prune" / "model.pt")
    assert set(masks) == {"net.1", "net.3"} and not all(bool(m.all()) for m in masks.values())
    stages = {s["name"] for s in report["stages"]}
    assert {"train", "prune"} <= stages


def test_plain_state_dict_folds_the_mask_into_the_weight():
    torch.manual_seed(0)
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    layer = prunable_layers(model)["net.1"]
    ensure_masked(layer)
    layer.weight_mask[0, :5] = 0
    state = plain_state_dict(model)
    assert set(state) == set(
        build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8}).state_dict()
    )
    assert torch.all(state["net.1.weight"][0, :5] == 0)
    assert not torch.any(torch.signbit(state["net.1.weight"][state["net.1.weight"] == 0]))
    assert "net.1.weight_orig" in model.state_dict()  # the model keeps its masks


def test_a_checkpoint_that_does_not_fit_its_model_is_one_clear_error(tmp_path):
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    ensure_masked(prunable_layers(model)["net.1"])  # weight_orig/weight_mask instead of weight
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, {"name": "simplenet", "kwargs": {"num_classes": 10, "hidden": 8}})
    with pytest.raises(
        CompressError, match=r"checkpoint .*model.pt does not fit its model: .*net.1.weight"
    ):
        load_checkpoint(path)


class DataDependent(nn.Module):
    """Control flow on the input's values: the ONNX exporter cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_a_model_the_exporter_cannot_trace_is_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match=r"exporting model.onnx to ONNX failed: \w+"):
        export_onnx(DataDependent(), (4,), tmp_path / "model.onnx", opset=18, metadata={})
    assert not (tmp_path / "model.onnx").exists()


def test_a_package_that_does_not_unpack_to_its_file_is_an_integrity_error(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"onnx bytes")
    gz_key, pack, _ = onnx_tools.PACKAGERS[".onnx.gz"]
    monkeypatch.setitem(onnx_tools.PACKAGERS, ".onnx.gz", (gz_key, pack, lambda data: b"other"))
    with pytest.raises(
        IntegrityError, match=r".onnx.gz package of .*m.onnx does not unpack to the same file"
    ):
        onnx_tools.write_packages(path, tmp_path)


def test_pruned_weights_that_move_in_finetuning_end_the_run_with_exit_status_3(
    pipeline_file, tmp_path, monkeypatch
):
    # Without its masks re-attached, fine-tuning moves the pruned weights: the stage's own check
    # stops it.
    monkeypatch.setattr("compress.stages.finetune.apply_masks", lambda model, masks: None)
    result = CliRunner().invoke(
        main, ["run", str(pipeline_file()), "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert result.exit_code == 3, result.output
    assert (
        result.output.startswith("error: pruned weights of net.") and result.output.count("\n") == 1
    )
    assert "changed during fine-tuning" in result.output
    assert not (tmp_path / "run" / "report.json").exists()
    assert json.loads((tmp_path / "run" / "prune" / "stage.json").read_text())["name"] == "prune"


def test_prune_disabled_passes_the_trained_weights_through_unmasked(pipeline_file, tmp_path):
    config = load_pipeline(pipeline_file({"prune.enabled": False}))
    run_pipeline(config, out_dir=tmp_path / "run", progress=False, until="prune")
    trained, _, _ = load_checkpoint(tmp_path / "run" / "train" / "model.pt")
    pruned, masks, _ = load_checkpoint(tmp_path / "run" / "prune" / "model.pt")
    assert masks == {}
    for key, value in trained.state_dict().items():
        assert torch.equal(value, pruned.state_dict()[key]), key
    record = json.loads((tmp_path / "run" / "prune" / "stage.json").read_text())
    assert record["metrics"]["epochs"] == []
