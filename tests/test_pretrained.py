"""Pretrained starts: `[model] weights` with `weights_partial = true` loads every tensor whose
name and shape fit (a backbone trained for another class count) and keeps the rest (the
head) as initialized; the train stage records what it skipped, and the file's hash keys it."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from compress.checkpoint import load_user_weights
from compress.config import load_pipeline
from compress.errors import CompressError
from compress.pipeline import run_pipeline, stage_keys
from compress.registry import build_model

HEAD = ["classifier.3.bias", "classifier.3.weight"]  # lenet5's last Linear: one row per class


@pytest.fixture
def imagenet_like(tmp_path):
    """A LeNet-5 state dict for 100 classes (as ImageNet weights are for 1000)."""
    torch.manual_seed(1)
    path = tmp_path / "lenet5-100.pt"
    torch.save(build_model("lenet5", kwargs={"num_classes": 100}).state_dict(), path)
    return path


def test_the_tensors_that_fit_are_loaded_and_the_head_keeps_its_initialization(
    imagenet_like, caplog
):
    torch.manual_seed(0)
    model = build_model("lenet5", kwargs={"num_classes": 10})
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k in HEAD}
    with caplog.at_level(logging.INFO):
        loaded = load_user_weights(model, imagenet_like, partial=True)
    assert loaded == {"loaded": 6, "skipped": HEAD, "unused": HEAD}
    given = torch.load(imagenet_like, weights_only=True)
    for name, tensor in model.state_dict().items():
        if name in HEAD:
            assert torch.equal(tensor, head_before[name]) and tensor.shape[0] == 10
        else:
            assert torch.equal(tensor, given[name]), name
    assert "loaded 6 of the model's 8 tensors" in caplog.text and HEAD[0] in caplog.text


def test_freeze_loaded_trains_only_the_new_head(pipeline_file, tmp_path):
    torch.manual_seed(1)
    source = build_model("simplenet", kwargs={"num_classes": 7, "hidden": 16})
    path = tmp_path / "seven.pt"
    torch.save(source.state_dict(), path)
    changes = {"model.weights": str(path), "model.weights_partial": True, "train.epochs": 1}
    config = load_pipeline(pipeline_file({**changes, "model.freeze_loaded": True}))
    run_dir = tmp_path / "run"
    run_pipeline(config, out_dir=run_dir, progress=False, until="train")
    trained = torch.load(run_dir / "train" / "model.pt", weights_only=True)["state_dict"]
    given = source.state_dict()
    assert torch.equal(trained["net.1.weight"], given["net.1.weight"])
    assert torch.equal(trained["net.1.bias"], given["net.1.bias"])
    metrics = json.loads((run_dir / "train" / "stage.json").read_text())["metrics"]
    assert metrics["frozen_params"] == 784 * 16 + 16
    torch.manual_seed(0)  # the head as the train stage initialized it (seeded by [data] seed)
    head = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16}).net[3].weight
    assert not torch.equal(trained["net.3.weight"], head)  # the head trained
    with pytest.raises(CompressError, match="freeze_loaded freezes what `weights` loads"):
        load_pipeline(pipeline_file({"model.freeze_loaded": True}, name="no-weights"))


def test_without_weights_partial_a_head_of_another_size_is_an_error_that_names_the_key(
    imagenet_like,
):
    model = build_model("lenet5", kwargs={"num_classes": 10})
    with pytest.raises(CompressError, match=r"size mismatch for classifier\.3\.weight.*"):
        load_user_weights(model, imagenet_like)
    with pytest.raises(CompressError, match=r"weights_partial = true in \[model\]"):
        load_user_weights(model, imagenet_like)


def test_the_train_stage_records_the_skipped_tensors_and_the_file_keys_the_cache(
    pipeline_file, tmp_path, tiny_data
):
    torch.manual_seed(1)
    source = build_model("simplenet", kwargs={"num_classes": 7, "hidden": 16})
    path = tmp_path / "seven.pt"
    torch.save(source.state_dict(), path)
    config = load_pipeline(
        pipeline_file(
            {"model.weights": str(path), "model.weights_partial": True, "train.epochs": 0}
        )
    )
    run_dir = tmp_path / "run"
    run_pipeline(config, out_dir=run_dir, progress=False, until="train")
    metrics = json.loads((run_dir / "train" / "stage.json").read_text())["metrics"]
    assert metrics["weights"]["skipped"] == ["net.3.bias", "net.3.weight"]
    assert metrics["weights"]["loaded"] == 2 and len(metrics["weights"]["sha256"]) == 64
    trained = torch.load(run_dir / "train" / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(trained["net.1.weight"], source.state_dict()["net.1.weight"])

    before = stage_keys(config, tiny_data)["train"]
    torch.nn.init.zeros_(source.net[1].weight)
    torch.save(source.state_dict(), path)
    assert stage_keys(config, tiny_data)["train"] != before
