"""Clear messages for common slips: DataParallel weights, a byte-order mark, a sweep or a
tune over a setting the pipeline ignores."""

from __future__ import annotations

import logging

import pytest
import torch
from click.testing import CliRunner

from compress.analysis.sweep import plan_variants
from compress.checkpoint import load_user_weights
from compress.cli import main
from compress.config import ignored_by, load_pipeline, parse_pipeline
from compress.errors import CompressError
from compress.registry import build_model


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result, status: int = 2) -> str:
    assert result.exit_code == status, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    return errors[0]


def test_weights_saved_from_data_parallel_load_with_a_note(tmp_path, caplog):
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    wrapped = torch.nn.DataParallel(model)
    torch.nn.init.constant_(model.net[1].weight, 0.5)
    path = tmp_path / "dp.pt"
    torch.save(wrapped.state_dict(), path)
    assert all(k.startswith("module.") for k in torch.load(path, weights_only=True))
    fresh = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    with caplog.at_level(logging.WARNING):
        load_user_weights(fresh, path)
    assert torch.equal(fresh.net[1].weight, model.net[1].weight)
    assert "DataParallel" in caplog.text and "'module.'" in caplog.text


def test_a_pipeline_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeff[train]\nepochs = 3\n".encode())
    assert load_pipeline(path).train.epochs == 3
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({}, "prune.amount", "prune.method is 'threshold'"),
        ({"prune": {"method": "magnitude"}}, "prune.threshold", "prune.method is 'magnitude'"),
        ({}, "prune.gradual.epochs", "prune.schedule is 'oneshot'"),
        ({"prune": {"enabled": False}}, "prune.threshold", "prune.enabled is false"),
        ({"train": {"optimizer": "adam"}}, "train.momentum", "train.optimizer is 'adam'"),
        ({}, "finetune.gamma", "finetune.schedule is 'constant'"),
        ({}, "train.l1.method", "train.l1.lambda is 0"),
        ({}, "finetune.distill.temperature", "finetune.distill.alpha is 0"),
        (
            {"quantize": {"variants": ["dynamic"]}},
            "quantize.calibration_samples",
            "no static variant",
        ),
        ({"prune": {"method": "channels"}}, "prune.widths_reach", "prune.widths is 'rounded'"),
        ({}, "export.round_to", "export.shrink is false"),
    ],
)
def test_settings_a_pipeline_ignores_are_named(changes, key, reason):
    assert reason in ignored_by(parse_pipeline(changes, name="p"), key)


@pytest.mark.parametrize(
    "key", ["prune.threshold", "train.lr", "quantize.variants", "finetune.epochs"]
)
def test_settings_a_pipeline_reads_are_not_flagged(key):
    assert ignored_by(parse_pipeline({}, name="p"), key) is None


def test_round_to_is_read_by_measured_widths_as_their_step():
    # widths = "measured" chooses among multiples of round_to: a sweep over it is real
    config = parse_pipeline({"prune": {"method": "channels", "widths": "measured"}}, name="p")
    assert ignored_by(config, "prune.round_to") is None


def test_a_sweep_over_an_ignored_setting_is_refused_before_any_work():
    config = parse_pipeline({}, name="p")
    with pytest.raises(
        CompressError,
        match=r"sweep over prune\.gradual\.epochs: the pipeline ignores it "
        r"\(prune\.schedule is 'oneshot'",
    ):
        plan_variants(config, {"prune.gradual.epochs": [3, 5]})
    with pytest.raises(
        CompressError, match=r"sweep over train\.momentum: .*train\.optimizer is 'adam'"
    ):
        plan_variants(config, {"train.optimizer": ["adam", "adamw"], "train.momentum": [0.5, 0.9]})
    # read by some variants: allowed
    plan_variants(config, {"train.optimizer": ["sgd", "adam"], "train.momentum": [0.0, 0.9]})


def test_sweep_and_tune_over_an_ignored_setting_are_one_line(pipeline_file, tmp_path):
    pipeline = pipeline_file()
    line = one_error(
        invoke(
            "sweep", pipeline, "--set", "prune.gradual.lr=0.01,0.02", "--out", tmp_path / "sweep"
        )
    )
    assert "prune.gradual.lr" in line and "ignores it" in line
    line = one_error(
        invoke("sweep", pipeline, "--set", "prune.amount=0.8,0.9", "--out", tmp_path / "sweep")
    )
    assert "prune.amount" in line  # not a setting of the threshold method at all
    line = one_error(
        invoke(
            "tune", pipeline, "--max-drop", "1", "--param", "prune.amount", "--out", tmp_path / "t"
        )
    )
    assert "--param prune.amount" in line and "ignores it" in line
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "t").exists()
