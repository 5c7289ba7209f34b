"""`compress sensitivity`: each layer pruned alone at several levels, accuracy measured."""

import json

import torch
from click.testing import CliRunner

from compress.analysis.sensitivity import format_sensitivity, layer_sensitivity
from compress.cli import main
from compress.registry import build_model
from compress.training import evaluate


def test_each_layer_is_pruned_alone_and_restored(tiny_data):
    torch.manual_seed(0)
    model = build_model("simplenet", kwargs={"hidden": 16})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = layer_sensitivity(model, tiny_data, levels=[0.5, 0.99], batch_size=500)

    assert {r["layer"] for r in result["rows"]} == {"net.1", "net.3"}
    assert len(result["rows"]) == 4
    for key, value in model.state_dict().items():  # the model comes back unchanged
        assert torch.equal(value, before[key]), key
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert result["baseline_accuracy"] == evaluate(model, tiny_data, "val", 500, "cpu")
    for row in result["rows"]:
        assert row["delta_pts"] == round(100 * (row["accuracy"] - result["baseline_accuracy"]), 2)


def test_table_has_a_row_per_layer_and_a_column_per_level(tiny_data):
    model = build_model("simplenet", kwargs={"hidden": 16})
    text = format_sensitivity(
        layer_sensitivity(model, tiny_data, levels=[0.5, 0.9], batch_size=500)
    )
    lines = text.splitlines()
    assert "50%" in lines[1] and "90%" in lines[1]
    assert [line.split()[0] for line in lines[3:]] == ["net.1", "net.3"]


def test_cli_trains_once_then_writes_table_json_and_plot(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["sensitivity", str(tiny_pipeline), "--out", str(out), "--levels", "0.5,0.9"]
    )
    assert result.exit_code == 0, result.output
    assert "net.1" in result.output
    data = json.loads((out / "sensitivity" / "sensitivity.json").read_text())
    assert data["levels"] == [0.5, 0.9]
    assert (out / "sensitivity" / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "train" / "stage.json").is_file()
    assert not (out / "prune").exists()  # only the training the analysis needs ran


def test_cli_rejects_levels_outside_0_1(tiny_pipeline, tmp_path):
    result = CliRunner().invoke(
        main,
        ["sensitivity", str(tiny_pipeline), "--out", str(tmp_path / "r"), "--levels", "0.5,1.5"],
    )
    assert result.exit_code == 2
    assert "between 0 and 1" in result.output
    assert not (tmp_path / "r").exists()


def test_cli_sets_the_threads_it_is_given(tiny_pipeline, tmp_path):
    try:
        result = CliRunner().invoke(
            main,
            [
                "sensitivity",
                str(tiny_pipeline),
                "--out",
                str(tmp_path / "r"),
                "--levels",
                "0.5",
                "--threads",
                "2",
            ],
        )
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(1)
    assert result.exit_code == 0, result.output
    assert threads == 2
