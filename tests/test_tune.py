"""`compress tune`: the bisection on a stand-in for the pipeline (fast, every branch), the
scaling of per-layer overrides, and one real search on the tiny pipeline (training once)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from typed_json import mismatches

import compress.analysis.runner as runner_module
import compress.analysis.tune as tune_module
from compress.analysis.tune import evaluate_point, midpoint, point_overrides, tune
from compress.cli import main
from compress.config import parse_pipeline
from compress.results import Tune


def report(
    dense: float, pruned: float, quantized: float, sparsity: float, cached: bool = True
) -> dict:
    def artifact(name, accuracy, deploy, status="ok"):
        # test accuracy deliberately far off: every choice must be made on val_accuracy
        return {
            "name": name,
            "val_accuracy": accuracy,
            "accuracy": 1 - accuracy,
            "deploy_bytes": deploy,
            "sparsity": sparsity,
            "status": status,
        }

    return {
        "artifacts": [
            artifact("dense", dense, 100_000),
            artifact("pruned", pruned, int(60_000 * (1 - sparsity)) + 500),
            artifact("pruned-int8-dynamic", quantized, int(20_000 * (1 - sparsity)) + 200),
        ],
        "training": {"pruned_sparsity": sparsity},
        "stages": [{"name": "train", "cached": cached}],
    }


def test_evaluate_point_takes_the_smallest_artifact_within_budget_else_the_most_accurate():
    r = report(0.98, 0.978, 0.975, 0.9)
    within = evaluate_point(r, max_drop=0.3)
    assert within["meets"] and within["best"]["artifact"] == "pruned"
    assert within["best"]["drop"] == pytest.approx(0.2)  # on the validation split
    assert within["best"]["val_accuracy"] == 0.978 and within["best"][
        "test_accuracy"
    ] == pytest.approx(0.022)
    assert evaluate_point(r, max_drop=0.5)["best"]["artifact"] == "pruned-int8-dynamic"
    missed = evaluate_point(r, max_drop=0.1)
    assert not missed["meets"] and missed["best"]["artifact"] == "pruned"
    r["artifacts"][1]["status"] = r["artifacts"][2]["status"] = "failed: logits differ"
    assert evaluate_point(r, max_drop=5)["best"] is None


def test_per_layer_amounts_keep_their_density_ratios():
    config = parse_pipeline(
        {
            "prune": {
                "method": "magnitude",
                "amount": 0.92,
                "overrides": {"net.1": {"amount": 0.965}, "net.5": {"amount": 0.70}},
            }
        },
        name="p",
    )
    same = point_overrides(config, "prune.amount", 0.92)
    assert same["prune.overrides"] == {"net.1": {"amount": 0.965}, "net.5": {"amount": 0.7}}
    denser = point_overrides(config, "prune.amount", 0.84)  # twice the kept fraction everywhere
    assert denser["prune.overrides"]["net.1"]["amount"] == pytest.approx(1 - 2 * 0.035)
    assert denser["prune.overrides"]["net.5"]["amount"] == pytest.approx(1 - 2 * 0.30)
    assert (
        point_overrides(config, "prune.amount", 0.0)["prune.overrides"]["net.5"]["amount"] == 0.0
    )  # clipped
    config.with_overrides(point_overrides(config, "prune.amount", 0.99))  # still a valid pipeline
    thresholds = parse_pipeline(
        {"prune": {"threshold": 0.01, "overrides": {"net.1": {"threshold": 0.02}}}}, name="t"
    )
    assert point_overrides(thresholds, "prune.threshold", 0.03)["prune.overrides"] == {
        "net.1": {"threshold": 0.06}
    }
    assert point_overrides(thresholds, "finetune.lr", 0.1) == {"finetune.lr": 0.1}


def test_midpoints():
    assert midpoint(0.5, 0.99, geometric=False) == 0.745
    assert midpoint(0.001, 0.1, geometric=True) == 0.01


@pytest.fixture
def fake_runs(monkeypatch, tmp_path, pipeline_writer):
    """tune() on a stand-in for running a point: accuracy falls as the amount rises past `knee`."""
    calls = []

    def install(knee: float, slope: float = 20.0):
        def run_task(task):
            value = task.overrides["prune.amount"]
            calls.append(value)
            loss = max(0.0, value - knee) * slope / 100
            return {"report": report(0.98, 0.98 - loss, 0.979 - loss, value, cached=len(calls) > 1)}

        monkeypatch.setattr(runner_module, "run_task", run_task)
        return calls

    pipeline = pipeline_writer(
        tmp_path / "m.toml", {"prune.method": "magnitude", "prune.amount": 0.9}
    )
    return install, pipeline


def test_bisection_finds_the_highest_amount_within_budget(fake_runs, tmp_path):
    install, pipeline = fake_runs
    calls = install(knee=0.9)
    result = tune(pipeline, max_drop=0.5, out_dir=tmp_path / "t", steps=6)
    assert calls[:2] == [0.99, 0.5]
    assert len(calls) == 8
    # pruned at 0.98 - 0.2 * (a - 0.9) >= 0.975 - ... : the budget holds up to a = 0.925
    assert 0.92 <= result["chosen"] <= 0.925
    assert all(p["meets"] == (p["value"] <= 0.925 + 1e-9) for p in result["points"])
    assert result["train_runs"] == 1
    saved = json.loads((tmp_path / "t/tune.json").read_text())
    assert mismatches(saved, Tune) == []
    assert saved["chosen"] == result["chosen"] and len(saved["points"]) == 8
    md = (tmp_path / "t/tune.md").read_text()
    assert "(chosen)" in md and "prune.amount" in md


def test_the_high_end_meeting_the_budget_stops_at_once_and_says_so(fake_runs, tmp_path):
    install, pipeline = fake_runs
    calls = install(knee=0.995)
    result = tune(pipeline, max_drop=0.5, out_dir=tmp_path / "t")
    assert calls == [0.99] and result["chosen"] == 0.99
    assert any("raise --high" in n for n in result["notes"])


def test_nothing_within_budget_is_said_plainly(fake_runs, tmp_path):
    install, pipeline = fake_runs
    calls = install(knee=0.1)
    result = tune(pipeline, max_drop=0.5, out_dir=tmp_path / "t")
    assert calls == [0.99, 0.5] and result["chosen"] is None
    assert result["notes"] == [
        "nothing meets the budget: even prune.amount = 0.5 drops more than 0.5 pts"
    ]
    assert "nothing meets the budget" in (tmp_path / "t/tune.md").read_text()


def test_ties_on_sparsity_are_reported(monkeypatch, tmp_path, pipeline_writer):
    def run_task(task):  # sparsity stops at 0.9 whatever the amount; accuracy falls past 0.97
        value = task.overrides["prune.amount"]
        loss = 0.05 if value > 0.97 else 0.0
        return {"report": report(0.98, 0.979 - loss, 0.978 - loss, min(value, 0.9))}

    monkeypatch.setattr(runner_module, "run_task", run_task)
    pipeline = pipeline_writer(tmp_path / "m.toml", {"prune.method": "magnitude"})
    result = tune(pipeline, max_drop=0.5, out_dir=tmp_path / "t", steps=5)
    chosen = next(p for p in result["points"] if p["value"] == result["chosen"])
    assert chosen["pruned_sparsity"] == 0.9 and result["ties"]
    tied = [p for p in result["points"] if p["value"] in result["ties"]]
    assert all(p["pruned_sparsity"] == 0.9 and p["meets"] for p in tied)
    assert "tied on sparsity with" in (tmp_path / "t/tune.md").read_text()


def test_a_setting_that_changes_training_is_judged_against_the_pipelines_dense_model(
    monkeypatch, tmp_path, pipeline_writer
):
    # a stronger L1 penalty weakens the dense model as much as the pruned one: against its
    # own dense model every point would meet the budget (and the high end win at once)
    calls = []

    def run_task(task):
        lam = task.overrides.get("train.l1.lambda", 1e-4)  # the reference: the file's own 1e-4
        calls.append(task.name)
        dense = 0.95 - 5 * (lam - 1e-4)
        return {"report": report(dense, dense - 0.001, dense - 0.002, 0.5 + 40 * lam)}

    monkeypatch.setattr(runner_module, "run_task", run_task)
    pipeline = pipeline_writer(tmp_path / "p.toml")
    result = tune(
        pipeline,
        max_drop=1.0,
        out_dir=tmp_path / "t",
        param="train.l1.lambda",
        low=1e-5,
        high=1e-2,
        steps=4,
    )
    assert calls[:3] == ["reference", "lambda-0.01", "lambda-1e-05"]
    assert result["reference"] == {
        "run_dir": str(tmp_path / "t/reference"),
        "dense_val_accuracy": 0.95,
    }
    assert mismatches(json.loads((tmp_path / "t/tune.json").read_text()), Tune) == []
    for p in result["points"]:
        assert p["best"]["drop"] == pytest.approx(
            100 * (0.95 - p["best"]["val_accuracy"]), abs=1e-3
        )
        assert p["meets"] == (p["best"]["drop"] <= 1.0)
    assert result["chosen"] is not None and result["chosen"] < 1e-2
    text = tune_module.format_table(result)
    assert "Δ pts against the dense model of the pipeline as written, on validation (95.00%" in text


def test_points_that_train_alike_are_their_own_reference(fake_runs, tmp_path):
    install, pipeline = fake_runs
    calls = install(knee=0.9)
    result = tune(pipeline, max_drop=0.5, out_dir=tmp_path / "t", steps=1)
    assert len(calls) == 3  # no reference run: prune.amount leaves the dense model alone
    assert result["reference"] == {
        "run_dir": str(tmp_path / "t/amount-0.99"),
        "dense_val_accuracy": 0.98,
    }


def test_threads_are_set_for_every_point(monkeypatch, tmp_path, pipeline_writer):
    import torch

    seen = []

    def run_task(task):
        seen.append(torch.get_num_threads())
        return {"report": report(0.98, 0.979, 0.978, 0.9)}

    monkeypatch.setattr(runner_module, "run_task", run_task)
    pipeline = pipeline_writer(tmp_path / "p.toml")
    try:
        result = CliRunner().invoke(
            main,
            [
                "tune",
                str(pipeline),
                "--max-drop",
                "1",
                "--out",
                str(tmp_path / "t"),
                "--threads",
                "2",
            ],
        )
    finally:
        torch.set_num_threads(1)
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {2}


def test_bad_ranges_are_one_line_errors(tmp_path, pipeline_writer):
    threshold = pipeline_writer(tmp_path / "p.toml")
    magnitude = pipeline_writer(tmp_path / "m.toml", {"prune.method": "magnitude"})
    out = tmp_path / "out"
    cases = [
        (threshold, ["--low", "0.1", "--high", "0.01"], "must be below"),
        (threshold, ["--param", "finetune.lr"], "give --low and --high"),
        (magnitude, ["--high", "1.5"], "prune.amount"),
        (threshold, ["--set", "finetune.epochs=1,2"], "one value per key"),
    ]
    for pipeline, args, message in cases:
        result = CliRunner().invoke(
            main, ["tune", str(pipeline), "--max-drop", "1", "--out", str(out), *args]
        )
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error:") and message in result.output
    assert not out.exists()


@pytest.mark.slow
def test_a_real_search_trains_once(tmp_path, pipeline_writer):
    # tiny pipeline, one quantized variant, just the two ends (the bisection is tested above)
    pipeline = pipeline_writer(tmp_path / "tiny.toml", {"quantize.variants": ["dynamic"]})
    result = CliRunner().invoke(
        main,
        [
            "tune",
            str(pipeline),
            "--max-drop",
            "1",
            "--low",
            "0.005",
            "--high",
            "0.5",
            "--steps",
            "0",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "t/tune.json").read_text())
    assert mismatches(saved, Tune) == []
    assert saved["param"] == "prune.threshold" and [p["value"] for p in saved["points"]] in (
        [0.5],
        [0.5, 0.005],
    )
    trained = [
        json.loads((tmp_path / "t" / f"threshold-{p['value']:g}/report.json").read_text())[
            "stages"
        ][0]
        for p in saved["points"]
    ]
    assert [s["cached"] for s in trained] == [False] + [True] * (len(trained) - 1)
    assert saved["train_runs"] == 1
    for p in saved["points"]:
        assert p["meets"] == (p["best"]["drop"] <= 1)
    assert "training ran in 1 of them" in result.output
    if saved["chosen"] is not None:
        chosen = next(p for p in saved["points"] if p["value"] == saved["chosen"])
        assert chosen["meets"]
        assert all(
            p["pruned_sparsity"] <= chosen["pruned_sparsity"] for p in saved["points"] if p["meets"]
        )
    else:
        assert "nothing meets the budget" in result.output
