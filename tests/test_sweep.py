"""Sweeps: --set parsing, the Pareto frontier and the budget on hand-made points, the shared
stage cache, and real tiny sweeps (in worker processes, through Ray, and --ray without Ray).

The real sweep runs once per module: 2 prune thresholds x 2 quantize variants of the tiny
pipeline in 2 processes with a fresh cache; training must run in exactly one variant.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from typed_json import mismatches

from compress.analysis.sweep import (
    best_within_budget,
    collect_points,
    pareto_frontier,
    parse_set,
    plan_variants,
    split_top_level,
    sweep_axes,
    variant_names,
    within_budget,
)
from compress.cache import StageCache
from compress.cli import main
from compress.errors import CompressError
from compress.files import sha256_file, write_json
from compress.results import Sweep

SETS = ["--set", "prune.threshold=0.01,0.03", "--set", 'quantize.variants=["dynamic"],["static"]']


# ---------------------------------------------------------------- --set values


@pytest.mark.parametrize(
    "spec, key, values",
    [
        ("prune.amount=0.9,0.95", "prune.amount", [0.9, 0.95]),
        ("prune.threshold=1e-3, 3e-3", "prune.threshold", [1e-3, 3e-3]),
        (
            'quantize.variants=["dynamic"],["static","dynamic"]',
            "quantize.variants",
            [["dynamic"], ["static", "dynamic"]],
        ),
        ('quantize.variants=["dynamic", "static"]', "quantize.variants", [["dynamic", "static"]]),
        ("quantize.source=dense,pruned", "quantize.source", ["dense", "pruned"]),
        ('quantize.source="dense"', "quantize.source", ["dense"]),
        ("quantize.per_channel=true,false", "quantize.per_channel", [True, False]),
        ("finetune.epochs=1,2", "finetune.epochs", [1, 2]),
        (
            'train.l1={ lambda = 1e-4, method = "proximal" }',
            "train.l1",
            [{"lambda": 1e-4, "method": "proximal"}],
        ),
    ],
)
def test_set_values_are_toml_literals(spec, key, values):
    assert parse_set(spec) == (key, values)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("prune.amount", "expected KEY=VALUE"),
        ("=0.9", "expected KEY=VALUE"),
        ("prune.amount=", "expected KEY=VALUE"),
        ("prune.amount=[0.9", "is not a TOML value"),
        ("prune.amount=0.9,(1)", "is not a TOML value"),
    ],
)
def test_bad_set_values_are_one_line_errors(spec, message):
    with pytest.raises(CompressError, match=message):
        parse_set(spec)


def test_split_top_level_keeps_brackets_and_quotes_whole():
    assert split_top_level('[1, 2], "a,b", {x = [3, 4]}, 5') == [
        "[1, 2]",
        '"a,b"',
        "{x = [3, 4]}",
        "5",
    ]


def test_variants_are_every_combination_validated_before_any_work(tmp_path, pipeline_writer):
    from compress.config import load_pipeline

    config = load_pipeline(
        pipeline_writer(tmp_path / "p.toml", {"sweep": {"prune.threshold": [0.01, 0.02]}})
    )
    axes = sweep_axes(config, ['quantize.variants=["dynamic"],["static"]'])
    variants = plan_variants(config, axes)
    assert [v["name"] for v in variants] == [
        "threshold-0.01_variants-dynamic",
        "threshold-0.01_variants-static",
        "threshold-0.02_variants-dynamic",
        "threshold-0.02_variants-static",
    ]
    assert variants[3]["overrides"] == {"prune.threshold": 0.02, "quantize.variants": ["static"]}
    with pytest.raises(CompressError, match=r"variant amount-1.5 .*prune.amount"):
        plan_variants(config, {"prune.amount": [1.5]})
    with pytest.raises(CompressError, match="unknown key"):
        plan_variants(config, {"prune.treshold": [0.1]})
    with pytest.raises(CompressError, match="nothing to sweep"):
        sweep_axes(load_pipeline(pipeline_writer(tmp_path / "q.toml")), [])


def test_variant_names_are_unique_and_use_the_whole_key_when_two_end_alike():
    axes = {"train.epochs": [1, 2], "finetune.epochs": [1]}
    combos = [{"train.epochs": 1, "finetune.epochs": 1}, {"train.epochs": 2, "finetune.epochs": 1}]
    assert variant_names(combos, axes) == ["epochs-1", "epochs-2"]
    axes = {"train.epochs": [1, 2], "finetune.epochs": [1, 2]}
    combos = [{"train.epochs": 1, "finetune.epochs": 2}]
    assert variant_names(combos, axes) == ["train.epochs-1_finetune.epochs-2"]
    assert variant_names([{"a.b": 0.1}, {"a.b": 0.1}], {"a.b": [0.1, 0.1]}) == ["b-0.1", "b-0.1-2"]


# ---------------------------------------------------------------- frontier and budget


def point(label, deploy, accuracy, drop=0.0, artifact=None, status="ok"):
    return {
        "label": label,
        "artifact": artifact or label,
        "deploy_bytes": deploy,
        "val_accuracy": accuracy,
        "drop": drop,
        "status": status,
    }


def test_pareto_frontier_keeps_the_smallest_artifact_for_each_accuracy_level():
    points = [
        point("dense", 100_000, 0.980),
        point("a", 10_000, 0.970),
        point("b", 12_000, 0.965),  # larger and less accurate than a: off
        point("c", 5_000, 0.950),
        point("d", 5_000, 0.940),  # same size as c, less accurate: off
        point("e", 20_000, 0.970),  # as accurate as a but larger: off
        point("f", 3_000, 0.990, status="failed: logits differ"),  # failed: never on it
        point("g", 50_000, 0.975),
    ]
    front = pareto_frontier(points)
    assert [p["label"] for p in front] == ["c", "a", "g", "dense"]
    # no point on the frontier is dominated, every point off it is
    for p in points:
        if p["status"] != "ok":
            continue
        beaten = any(
            q["deploy_bytes"] <= p["deploy_bytes"]
            and q["val_accuracy"] >= p["val_accuracy"]
            and q is not p
            and (q["deploy_bytes"], q["val_accuracy"]) != (p["deploy_bytes"], p["val_accuracy"])
            for q in points
            if q["status"] == "ok"
        )
        assert beaten == (p not in front)


def test_pareto_frontier_keeps_exact_ties_and_handles_one_or_no_point():
    twins = [point("x", 1_000, 0.9), point("y", 1_000, 0.9)]
    assert {p["label"] for p in pareto_frontier(twins)} == {"x", "y"}
    assert pareto_frontier([point("only", 1, 0.5)])[0]["label"] == "only"
    assert pareto_frontier([]) == []


def test_budget_picks_the_smallest_artifact_within_it_and_says_when_none_is():
    points = [
        point("dense", 100_000, 0.980, 0.0),
        point("a", 10_000, 0.976, 0.4, "pruned"),
        point("b", 8_000, 0.970, 1.0, "pruned-int8-static"),
        point("c", 10_000, 0.976, 0.4, "pruned-int8-dynamic"),
        point("d", 4_000, 0.99, -1.0, "pruned-int4-static", status="failed: x"),
    ]
    budget = within_budget(points, max_drop=0.5)
    assert budget["chosen"] == "a" and budget["ties"] == ["c"]
    assert within_budget(points, max_drop=1.0)["chosen"] == "b"
    assert within_budget(points, max_drop=0.4)["chosen"] == "a"  # exactly at the limit counts
    nothing = within_budget(points, max_drop=0.1)
    assert nothing["chosen"] is None and nothing["closest"] == "a"


def test_the_budget_rule_smallest_within_else_closest_with_ties():
    table = [
        point("dense", 100_000, 0.980, 0.0),
        point("a", 9_000, 0.975, 0.5, "pruned"),
        point("b", 4_000, 0.970, 1.0, "pruned-int8-dynamic"),
        point("c", 4_000, 0.972, 0.8, "pruned-int8-static"),  # as small as b, more accurate
        point("d", 2_000, 0.950, 3.0, "pruned-int4-static"),
        point("e", 1_000, 0.990, -1.0, "pruned-packed-int4", status="failed: x"),  # never chosen
    ]
    within = best_within_budget(table, max_drop=1.0)
    assert (within.best["label"], within.meets, within.ties) == ("c", True, [])
    assert (
        best_within_budget(table, max_drop=0.5).best["label"] == "a"
    )  # exactly at the limit counts
    none = best_within_budget(table, max_drop=0.1)
    assert (none.best["label"], none.meets) == ("a", False)  # the closest: the smallest drop
    assert best_within_budget(table, max_drop=None).best["label"] == "d"  # no budget: the smallest
    twins = [*table, point("b2", 4_000, 0.972, 0.8, "pruned-codebook")]
    tied = best_within_budget(twins, max_drop=1.0)
    assert tied.best["label"] == "b2" and [p["label"] for p in tied.ties] == ["c"]  # then by label
    assert best_within_budget(table[:1] + table[-1:], max_drop=1.0) == (None, False, [])


@pytest.mark.parametrize("max_drop", [0.1, 0.5, 0.8, 1.0, 5.0])
def test_sweep_tune_and_search_choose_by_the_same_rule(max_drop):
    from compress.analysis.search import artifact_rows, trial_score
    from compress.analysis.tune import evaluate_point

    def artifact(name, val, deploy, status="ok"):
        return {
            "name": name,
            "path": f"{name}.onnx",
            "bytes": 100_000,
            "deploy_bytes": deploy,
            "val_accuracy": val,
            "accuracy": 1 - val,
            "compression": 100_000 / deploy,
            "sparsity": 0.9,
            "status": status,
        }

    report = {
        "artifacts": [
            artifact("dense", 0.98, 100_000),
            artifact("pruned", 0.975, 9_000),
            artifact("pruned-int8-dynamic", 0.97, 4_000),
            artifact("pruned-int8-static", 0.972, 4_000),
            artifact("pruned-int4-static", 0.95, 2_000),
            artifact("pruned-packed-int4", 0.99, 1_000, "failed: x"),
        ],
        "training": {"pruned_sparsity": 0.9},
        "stages": [{"name": "train", "cached": False}],
    }
    expected = best_within_budget(
        collect_points([{"name": "v", "run_dir": "/r", "report": report}], reference=0.98), max_drop
    )
    sweep = within_budget(
        collect_points([{"name": "v", "run_dir": "/r", "report": report}], reference=0.98), max_drop
    )
    assert (sweep["chosen"] or sweep["closest"]) == "v/" + expected.best["artifact"]
    tune = evaluate_point(report, max_drop, reference=0.98)
    assert (tune["best"]["artifact"], tune["meets"]) == (expected.best["artifact"], expected.meets)
    assert (
        trial_score(artifact_rows(report, 0.98, "t"), max_drop)["artifact"]
        == expected.best["artifact"]
    )


def test_identical_artifacts_of_several_variants_are_one_point():
    def report(acc):
        return {
            "artifacts": [
                {
                    "name": "dense",
                    "path": "dense.onnx",
                    "bytes": 10,
                    "gzip_bytes": 9,
                    "xz_bytes": 8,
                    "deploy_bytes": 8,
                    "val_accuracy": 0.9,
                    "accuracy": 0.5,
                    "compression": 1.2,
                    "sparsity": 0.0,
                    "status": "ok",
                },
                {
                    "name": "pruned",
                    "path": "pruned.onnx",
                    "bytes": 10,
                    "gzip_bytes": 5,
                    "xz_bytes": 4,
                    "deploy_bytes": 4,
                    "val_accuracy": acc,
                    "accuracy": 0.5,
                    "compression": 2.5,
                    "sparsity": 0.5,
                    "status": "ok",
                },
            ]
        }

    results = [
        {"name": "v1", "run_dir": "/r/v1", "report": report(0.89)},
        {"name": "v2", "run_dir": "/r/v2", "report": report(0.85)},
    ]
    points = collect_points(results)
    assert [p["label"] for p in points] == ["dense", "v1/pruned", "v2/pruned"]
    assert points[0]["variants"] == ["v1", "v2"]
    assert points[2]["drop"] == pytest.approx(
        5.0
    )  # on the validation split; the test split is only shown
    assert points[2]["val_accuracy"] == 0.85 and points[2]["test_accuracy"] == 0.5


# ---------------------------------------------------------------- the bar: the dense model


def variant_report(
    dense: float, pruned: float, pruned_bytes: int, train_cached: bool = True
) -> dict:
    """A run's report.json, as far as a sweep reads it (validation accuracies)."""

    def artifact(name, accuracy, deploy):
        return {
            "name": name,
            "path": f"{name}.onnx",
            "bytes": 100_000,
            "deploy_bytes": deploy,
            "val_accuracy": accuracy,
            "accuracy": accuracy,
            "compression": 100_000 / deploy,
            "sparsity": 0.0 if name == "dense" else 0.9,
            "status": "ok",
        }

    return {
        "artifacts": [
            artifact("dense", dense, 90_000 + int(1e6 * dense) % 1000),
            artifact("pruned", pruned, pruned_bytes),
        ],
        "training": {"dense_val_accuracy": dense},
        "stages": [{"name": "train", "cached": train_cached}, {"name": "prune", "cached": False}],
    }


@pytest.fixture
def fake_sweep(monkeypatch):
    """Sweeps on a stand-in for running the variants: `make(overrides) -> report`; returns
    the names of the runs, in order."""
    import compress.analysis.sweep as sweep_module

    ran = []

    def install(make):
        def run_tasks(tasks, jobs=1, ray_address=None):
            ran.extend(t.name for t in tasks)
            return [
                {
                    "name": t.name,
                    "overrides": t.overrides,
                    "run_dir": t.run_dir,
                    "report": make(t.overrides),
                }
                for t in tasks
            ]

        monkeypatch.setattr(sweep_module, "run_tasks", run_tasks)
        return ran

    return install


def test_a_variant_that_weakens_its_own_dense_model_is_judged_against_the_pipelines(
    fake_sweep, monkeypatch, tmp_path, pipeline_writer
):
    # the pipeline as written (lambda 1e-4) makes a dense model of 95% on validation; lambda
    # 1e-2 makes one of 89.7%, and a pruned model as good as that: "+0.00 pts" against its
    # own dense model, but 5.3 points below the pipeline's
    def make(overrides):
        lam = overrides.get("train.l1.lambda", 1e-4)
        if lam == 1e-2:
            return variant_report(dense=0.897, pruned=0.897, pruned_bytes=2_000)
        return variant_report(dense=0.95, pruned=0.945, pruned_bytes=5_000)

    ran = fake_sweep(make)
    drawn = {}
    monkeypatch.setattr(
        "compress.analysis.plot.plot_tradeoff", lambda *args, **kwargs: drawn.update(kwargs)
    )
    pipeline = pipeline_writer(tmp_path / "p.toml")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(pipeline),
            "--set",
            "train.l1.lambda=1e-3,1e-2",
            "--out",
            str(out),
            "--max-drop",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert ran == [
        "reference",
        "lambda-0.001",
        "lambda-0.01",
    ]  # no variant is the pipeline as written
    summary = json.loads((out / "sweep.json").read_text())
    assert mismatches(summary, Sweep) == []
    drops = {p["label"]: p["drop"] for p in summary["points"]}
    assert drops["lambda-0.01/pruned"] == pytest.approx(5.3)
    assert drops["lambda-0.01/dense"] == pytest.approx(5.3)
    assert drops["lambda-0.001/pruned"] == pytest.approx(0.5)
    assert summary["budget"]["chosen"] == "lambda-0.001/pruned"
    assert (
        summary["reference"]["dense_val_accuracy"] == 0.95
        and summary["reference"]["variant"] is None
    )
    assert not any(p["label"].startswith("reference") for p in summary["points"])
    assert (
        "Δ pts against the dense model of the pipeline as written, on validation (95.00%"
        in result.output
    )
    assert "smallest within 1 pts of the reference dense: lambda-0.001/pruned" in result.output
    assert "dense model of the pipeline as written" in (out / "sweep.md").read_text()
    assert drawn["budget_line"] == pytest.approx(0.94)  # the budget, drawn: 95% - 1 pt


def test_a_variant_that_trains_as_the_pipeline_does_is_the_reference(
    fake_sweep, tmp_path, pipeline_writer
):
    ran = fake_sweep(
        lambda overrides: variant_report(0.95, 0.94, int(1e5 * overrides["prune.threshold"]))
    )
    pipeline = pipeline_writer(
        tmp_path / "p.toml"
    )  # threshold 0.02: neither value is the file's own
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(pipeline),
            "--set",
            "prune.threshold=0.01,0.03",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert ran == ["threshold-0.01", "threshold-0.03"]  # the same training: nothing more runs
    summary = json.loads((tmp_path / "out/sweep.json").read_text())
    assert summary["reference"]["variant"] == "threshold-0.01"
    assert "(95.00%, variant threshold-0.01)" in result.output


def test_threads_are_set_for_the_variants(monkeypatch, tmp_path, pipeline_writer):
    import torch

    import compress.analysis.runner as runner_module

    seen = []

    def run_task(task):
        seen.append(torch.get_num_threads())
        return {
            "name": task.name,
            "overrides": task.overrides,
            "run_dir": task.run_dir,
            "report": variant_report(0.95, 0.94, 5_000),
        }

    monkeypatch.setattr(runner_module, "run_task", run_task)
    pipeline = pipeline_writer(tmp_path / "p.toml")
    try:
        result = CliRunner().invoke(
            main,
            [
                "sweep",
                str(pipeline),
                "--set",
                "prune.threshold=0.01,0.03",
                "--out",
                str(tmp_path / "out"),
                "--threads",
                "2",
            ],
        )
    finally:
        torch.set_num_threads(1)
    assert result.exit_code == 0, result.output
    assert seen == [2, 2]


@pytest.mark.parametrize("count", [2, 4, 6])
def test_the_plot_shows_validation_accuracy_the_budget_and_labels_that_do_not_overlap(count):
    from compress.analysis.plot import draw_tradeoff

    # quantized files of nearby size and accuracy, with long labels: the usual small sweep
    candidates = [
        point("dense", 98_000, 0.9418),
        point("pruned", 30_500, 0.9415),
        point(
            "variants-dynamic/pruned-int8-dynamic", 12_400, 0.9411, artifact="pruned-int8-dynamic"
        ),
        point("variants-static/pruned-int8-static", 11_900, 0.9409, artifact="pruned-int8-static"),
        point(
            "variants-static-int4/pruned-int4-static", 8_300, 0.9380, artifact="pruned-int4-static"
        ),
        point(
            "variants-dynamic/pruned-int8-dynamic-2", 12_900, 0.9412, artifact="pruned-int8-dynamic"
        ),
    ]
    points = candidates[:count]
    frontier = [p["label"] for p in pareto_frontier(points)]
    fig = draw_tradeoff(
        points,
        frontier,
        chosen=frontier[0],
        budget_line=0.9368,
        budget_label="budget: the pipeline's dense 94.18% - 0.5 pts",
    )
    ax = fig.axes[0]
    assert ax.get_ylabel() == "validation accuracy (%)"
    line = next(x for x in ax.get_lines() if x.get_label().startswith("budget"))
    assert line.get_ydata()[0] == pytest.approx(93.68)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert set(boxes) == {p["label"] for p in points}
    labels = list(boxes.values())
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1 :])
    for p in points:  # no label covers another point's marker
        x, y = ax.transData.transform((p["deploy_bytes"], 100 * p["val_accuracy"]))
        assert not any(box.contains(x, y) for label, box in boxes.items() if label != p["label"])


# ---------------------------------------------------------------- the stage cache


def fake_stage(run_dir: Path, content: bytes = b"weights") -> dict:
    (run_dir / "train").mkdir(parents=True, exist_ok=True)
    (run_dir / "train" / "model.pt").write_bytes(content)
    (run_dir / "dense.onnx").write_bytes(content + b"-onnx")
    record = {
        "name": "train",
        "key": "k1",
        "inputs": {},
        "seconds": 1.0,
        "metrics": {"a": 1},
        "outputs": {rel: sha256_file(run_dir / rel) for rel in ("train/model.pt", "dense.onnx")},
    }
    write_json(run_dir / "train" / "stage.json", record)
    return record


def test_cache_entries_are_linked_into_run_folders_and_checked(tmp_path):
    cache = StageCache(tmp_path / "cache")
    record = fake_stage(tmp_path / "a")
    with cache.lock("train", "k1"):
        cache.store(record, tmp_path / "a")
    assert (tmp_path / "cache/train/k1/stage.json").is_file()
    got = cache.fetch("train", "k1", {}, tmp_path / "b")
    assert got["metrics"] == {"a": 1}
    assert (tmp_path / "b/train/model.pt").read_bytes() == b"weights"
    assert (tmp_path / "b/dense.onnx").stat().st_ino == (
        tmp_path / "cache/train/k1/dense.onnx"
    ).stat().st_ino
    assert json.loads((tmp_path / "b/train/stage.json").read_text())["key"] == "k1"
    # other parent outputs, another key, or a changed file: not used
    assert cache.fetch("train", "k1", {"prune/model.pt": "abc"}, tmp_path / "c") is None
    assert cache.fetch("train", "k2", {}, tmp_path / "c") is None
    (tmp_path / "cache/train/k1/dense.onnx").unlink()
    (tmp_path / "cache/train/k1/dense.onnx").write_bytes(b"tampered")
    assert cache.fetch("train", "k1", {}, tmp_path / "c") is None
    assert not (tmp_path / "c").exists()
    # storing again replaces the broken entry
    cache.store(fake_stage(tmp_path / "d", b"other"), tmp_path / "d")
    assert cache.lookup("train", "k1", {})["outputs"]["train/model.pt"] == sha256_file(
        tmp_path / "d/train/model.pt"
    )


def test_cache_lock_makes_a_second_holder_wait(tmp_path):
    cache = StageCache(tmp_path / "cache")
    order = []
    inside = threading.Event()

    def second():
        inside.wait(5)
        with cache.lock("train", "k"):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with cache.lock("train", "k"):
        inside.set()
        time.sleep(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]

    def other_key():
        with cache.lock("train", "other"):
            order.append("other")

    with cache.lock("train", "k"):  # another key is not held up while this one is held
        thread = threading.Thread(target=other_key)
        thread.start()
        thread.join(5)
        assert not thread.is_alive() and order[-1] == "other"


def test_shared_work_is_done_once_for_all_run_folders_of_a_cache(tmp_path):
    import torch

    from compress.stages.context import StageContext

    made = []

    def context(run: str, cache: StageCache | None) -> StageContext:
        return StageContext(
            None, tmp_path / run, "export", "key", torch.device("cpu"), lambda: None, cache=cache
        )

    def share(ctx: StageContext, identity: dict) -> tuple[dict, bool]:
        path = ctx.run_dir / "export" / "dense.onnx"

        def make() -> dict:
            made.append(ctx.run_dir.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"onnx of " + identity["model"].encode())
            return {"bytes": path.stat().st_size}

        return ctx.shared("dense-export", identity, [path], make)

    cache = StageCache(tmp_path / "cache")
    assert share(context("a", cache), {"model": "m1"}) == ({"bytes": 10}, False)
    assert share(context("b", cache), {"model": "m1"}) == ({"bytes": 10}, True)
    assert made == ["a"]
    assert (tmp_path / "b/export/dense.onnx").read_bytes() == b"onnx of m1"
    assert (tmp_path / "b/export/dense.onnx").stat().st_ino == (
        tmp_path / "a/export/dense.onnx"
    ).stat().st_ino
    assert share(context("c", cache), {"model": "m2"})[1] is False  # another model: made again
    assert share(context("d", None), {"model": "m1"})[1] is False  # no cache: always made
    assert made == ["a", "c", "d"]


@pytest.mark.slow
def test_variants_with_one_dense_model_export_and_measure_it_once(tmp_path, pipeline_writer):
    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline

    config = load_pipeline(pipeline_writer(tmp_path / "p.toml", {"quantize.variants": ["dynamic"]}))
    cache = tmp_path / "cache"
    reports = {
        t: run_pipeline(
            config.with_overrides({"prune.threshold": t}),
            out_dir=tmp_path / f"t{t}",
            progress=False,
            cache_dir=cache,
        )
        for t in (0.01, 0.03)
    }
    assert len([e for e in (cache / "dense-export").iterdir() if e.is_dir()]) == 1
    assert len([e for e in (cache / "dense-verify").iterdir() if e.is_dir()]) == 1
    # the second variant's dense files are the first's (hard links), its export and verify ran
    for rel in ("export/dense.onnx", "dense.onnx", "deploy/dense.onnx.xz"):
        assert (tmp_path / "t0.03" / rel).stat().st_ino == (
            tmp_path / "t0.01" / rel
        ).stat().st_ino, rel
    assert [s["cached"] for s in reports[0.03]["stages"]] == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    timed = (
        "latency_ms_b1_p50",
        "latency_ms_b1_p95",
        "latency_vs_dense",
        "latency_vs_dense_low",
        "latency_vs_dense_high",
        "slower_than_dense",
    )
    first, second = (
        next(a for a in r["artifacts"] if a["name"] == "dense") for r in reports.values()
    )
    assert {k: v for k, v in first.items() if k not in timed} == {
        k: v for k, v in second.items() if k not in timed
    }
    assert second["latency_ms_b1_p50"] is not None  # latency is still timed in each run
    pruned = next(a for a in reports[0.03]["artifacts"] if a["name"] == "pruned")
    assert pruned["accuracy_delta_ci"] and pruned["sparsity"] > 0


# ---------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, pipeline_writer):
    """2 thresholds x 2 quantize variants in 2 processes, fresh cache."""
    folder = tmp_path_factory.mktemp("sweep")
    pipeline = pipeline_writer(folder / "tiny.toml")
    out = folder / "out"
    result = CliRunner().invoke(
        main, ["sweep", str(pipeline), *SETS, "--out", str(out), "--jobs", "2", "--max-drop", "50"]
    )
    return result, out, pipeline


@pytest.mark.slow
def test_sweep_trains_once_and_writes_its_reports(sweep_run):
    result, out, _ = sweep_run
    assert result.exit_code == 0, result.output
    variants = sorted(p.name for p in out.iterdir() if (p / "report.json").is_file())
    assert variants == [
        "threshold-0.01_variants-dynamic",
        "threshold-0.01_variants-static",
        "threshold-0.03_variants-dynamic",
        "threshold-0.03_variants-static",
    ]
    reports = {v: json.loads((out / v / "report.json").read_text()) for v in variants}
    train_cached = [
        next(s["cached"] for s in r["stages"] if s["name"] == "train") for r in reports.values()
    ]
    assert sorted(train_cached) == [False, True, True, True]
    # variants with the same threshold share prune, finetune and export as well
    prune_keys = {
        v: next(s["key"] for s in r["stages"] if s["name"] == "prune") for v, r in reports.items()
    }
    assert len(set(prune_keys.values())) == 2
    assert [a["name"] for a in reports["threshold-0.03_variants-static"]["artifacts"]] == [
        "dense",
        "pruned",
        "pruned-int8-static",
    ]
    summary = json.loads((out / "sweep.json").read_text())
    assert mismatches(summary, Sweep) == []
    assert summary["train_runs"] == 1 and summary["stages_total"] == 24
    assert summary["stages_reused"] >= 9  # train 3x, prune/finetune/export 2x each
    assert (
        f"reused {summary['stages_reused']} of 24 stages; training ran in 1 of 4 variants"
        in result.output
    )
    assert summary["frontier"] and all(
        p["frontier"] == (p["label"] in summary["frontier"]) for p in summary["points"]
    )
    assert summary["budget"]["chosen"] in summary["frontier"]
    assert "smallest within 50 pts of the reference dense" in result.output
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "sweep.md").read_text()
    assert "## Pareto frontier" in md and "sweep.png" in md and "| smallest |" in md
    dense_points = [p for p in summary["points"] if p["artifact"] == "dense"]
    assert len(dense_points) == 1 and len(dense_points[0]["variants"]) == 4


@pytest.mark.slow
def test_compare_reads_the_sweep_variants(sweep_run):
    _, out, _ = sweep_run
    runs = [
        str(out / "threshold-0.01_variants-dynamic"),
        str(out / "threshold-0.03_variants-static"),
    ]
    result = CliRunner().invoke(main, ["compare", *runs])
    assert result.exit_code == 0, result.output
    assert (
        "threshold-0.01_variants-dynamic" in result.output and "pruned-int8-static" in result.output
    )
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.slow
def test_budget_that_nothing_meets_is_reported_honestly(sweep_run, tmp_path):
    _, out, pipeline = sweep_run
    # same settings, same cache: every stage is reused, only the budget differs
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(pipeline),
            *SETS,
            "--out",
            str(tmp_path / "again"),
            "--cache",
            str(out / "cache"),
            "--max-drop",
            "-100",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "nothing meets the budget" in result.output
    assert "reused 24 of 24 stages; training ran in 0 of 4 variants" in result.output


@pytest.mark.slow
def test_sweep_through_ray_on_a_local_cluster(sweep_run, tmp_path):
    _, out, pipeline = sweep_run
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(pipeline),
            *SETS,
            "--out",
            str(tmp_path / "ray"),
            "--cache",
            str(out / "cache"),
            "--ray",
            "local",
        ],
    )
    assert result.exit_code == 0, result.output
    mine = json.loads((tmp_path / "ray/sweep.json").read_text())
    reference = json.loads((out / "sweep.json").read_text())
    assert [v["name"] for v in mine["variants"]] == [v["name"] for v in reference["variants"]]
    accuracy = {p["label"]: p["val_accuracy"] for p in reference["points"]}
    assert {p["label"]: p["val_accuracy"] for p in mine["points"]} == accuracy
    assert mine["train_runs"] == 0


def test_ray_missing_exits_2_with_the_install_hint(monkeypatch, tmp_path, pipeline_writer):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    pipeline = pipeline_writer(tmp_path / "p.toml")
    result = CliRunner().invoke(
        main, ["sweep", str(pipeline), *SETS, "--out", str(tmp_path / "out"), "--ray", "local"]
    )
    assert result.exit_code == 2
    assert "pip install 'compress[ray]'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "prune.treshold=0.1,0.2"], "did you mean 'prune.threshold'"),
        (["--set", "prune.threshold=0.1,[0.2"], "is not a TOML value"),
        ([], "nothing to sweep"),
    ],
)
def test_bad_sweeps_fail_before_any_work(tmp_path, pipeline_writer, args, message):
    pipeline = pipeline_writer(tmp_path / "p.toml")
    result = CliRunner().invoke(
        main, ["sweep", str(pipeline), *args, "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2 and result.output.startswith("error:") and message in result.output
    assert not (tmp_path / "out").exists()
