"""Search: space parsing and its errors, the per-trial score on hand-made reports, and a
real tiny search (a few trials of the tiny pipeline) that is then resumed after a
simulated interruption, plus a trial that fails without ending the search.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from typed_json import mismatches

from compress.analysis.pareto import within_budget
from compress.analysis.search import (
    artifact_rows,
    objective_values,
    open_study,
    run_search,
    trial_score,
)
from compress.analysis.space import Space, parse_param, parse_space, search_spaces
from compress.cli import main
from compress.config import load_pipeline
from compress.errors import CompressError
from compress.results import Search

# A fast variant of the tiny pipeline: one quantized artifact, few timing repetitions.
FAST = {"quantize.variants": ["dynamic"], "verify.repetitions": 5}


# ---------------------------------------------------------------- spaces


@pytest.mark.parametrize(
    "spec, space",
    [
        ("prune.threshold=(0.005,0.08)", Space("prune.threshold", "uniform", 0.005, 0.08)),
        ("train.l1.lambda=log(1e-5, 1e-3)", Space("train.l1.lambda", "log", 1e-5, 1e-3)),
        ("finetune.epochs=int(1,3)", Space("finetune.epochs", "int", 1, 3)),
        (
            'quantize.variants=[["static"],["static-int4"]]',
            Space("quantize.variants", "choice", choices=(["static"], ["static-int4"])),
        ),
        ("train.lr=[0.01, 0.1]", Space("train.lr", "choice", choices=(0.01, 0.1))),
    ],
)
def test_spaces_are_parsed_without_eval(spec, space):
    assert parse_param(spec) == space


@pytest.mark.parametrize(
    "spec, message",
    [
        ("prune.threshold", "expected KEY=SPACE"),
        ("prune.threshold=", "expected KEY=SPACE"),
        ("threshold=(0.1,0.2)", "expected a dotted setting"),
        ("prune.threshold=(0.2,0.1)", "must be below high"),
        ("prune.threshold=(0.1)", "expected \\(low, high\\)"),
        ("prune.threshold=exp(1,2)", "expected \\(low, high\\)"),
        ("prune.threshold=__import__('os')", "expected \\(low, high\\)"),
        ("train.l1.lambda=log(0,1e-3)", "needs low > 0"),
        ("finetune.epochs=int(1.5,3)", "whole numbers"),
        ("quantize.variants=[]", "empty"),
        ('quantize.variants=[["static"]', "is not a TOML value"),
    ],
)
def test_bad_spaces_are_one_line_errors(spec, message):
    with pytest.raises(CompressError, match=message):
        parse_param(spec)


def test_search_table_and_params_are_checked_against_the_pipeline(tmp_path, pipeline_writer):
    path = pipeline_writer(
        tmp_path / "p.toml",
        {
            "search": {
                "prune.threshold": "(0.01, 0.05)",
                "quantize.variants": [["dynamic"], ["static"]],
            }
        },
    )
    config = load_pipeline(path)
    spaces = search_spaces(
        config, ["prune.threshold=log(0.001,0.1)"]
    )  # a --param replaces the table's
    assert spaces["prune.threshold"] == Space("prune.threshold", "log", 0.001, 0.1)
    assert spaces["quantize.variants"].choices == (["dynamic"], ["static"])
    with pytest.raises(CompressError, match="search quantize.variants=.*int9"):
        search_spaces(config, ['quantize.variants=["int9"]'])
    with pytest.raises(CompressError, match="search prune.nope=.*unknown key"):
        search_spaces(config, ["prune.nope=(1,2)"])
    with pytest.raises(CompressError, match="nothing to search"):
        search_spaces(load_pipeline(pipeline_writer(tmp_path / "q.toml")), [])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "prune.threshold=(0.1,0.01)", "--max-drop", "1"], "must be below high"),
        (["--param", "prune.bogus=(0.01,0.1)", "--max-drop", "1"], "unknown key"),
        (["--param", "prune.threshold=(0.01,0.1)"], "--objective size needs --max-drop"),
        (
            ["--param", "prune.threshold=(0.01,0.1)", "--objective", "latency"],
            "--objective latency needs --max-drop",
        ),
        (["--param", "prune.threshold=(0.01,0.1)", "--max-drop", "-1"], "give 0 or more"),
        ([], "nothing to search"),
    ],
)
def test_bad_searches_fail_before_any_work(tmp_path, pipeline_writer, args, message):
    path = pipeline_writer(tmp_path / "p.toml")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["search", str(path), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and lines[0].startswith("error:") and message.replace("\\", "") in lines[0]
    )
    assert not out.exists()


def test_a_bad_search_table_is_an_error(tmp_path, pipeline_writer):
    path = pipeline_writer(
        tmp_path / "p.toml", {"search": {"prune.threshold": "uniform(0.01, 0.1)"}}
    )
    result = CliRunner().invoke(
        main, ["search", str(path), "--out", str(tmp_path / "out"), "--max-drop", "1"]
    )
    assert (
        result.exit_code == 2
        and "error: search prune.threshold='uniform(0.01, 0.1)'" in result.output
    )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- scoring a trial


def _report(*artifacts):
    return {
        "artifacts": [
            {"name": n, "val_accuracy": v, "deploy_bytes": b, "sparsity": 0.9, "status": s}
            for n, v, b, s in artifacts
        ]
    }


def test_a_trial_scores_its_smallest_artifact_within_budget_on_validation():
    report = _report(
        ("dense", 0.98, 50_000, "ok"),
        ("pruned", 0.978, 9_000, "ok"),
        ("pruned-int8-dynamic", 0.975, 3_000, "ok"),
        ("pruned-int8-static", 0.96, 2_500, "ok"),
    )
    rows = artifact_rows(report, reference_val=0.98, where="t")
    assert trial_score(rows, max_drop=0.5)["artifact"] == "pruned-int8-dynamic"
    # nothing within 0.1: the one closest to the budget represents the trial (and is infeasible)
    assert trial_score(rows, max_drop=0.1) == next(r for r in rows if r["artifact"] == "pruned")
    assert (
        trial_score(rows, max_drop=None)["artifact"] == "pruned-int8-static"
    )  # the front: smallest
    failed = artifact_rows(
        _report(("dense", 0.98, 50_000, "ok"), ("pruned", 0.97, 9_000, "failed")), 0.98, "t"
    )
    assert trial_score(failed, 0.5) is None


def test_the_latency_objective_scores_the_fastest_artifact_within_budget():
    report = _report(
        ("dense", 0.98, 50_000, "ok"),
        ("pruned", 0.978, 9_000, "ok"),
        ("pruned-int8-dynamic", 0.975, 3_000, "ok"),
        ("pruned-int8-static", 0.96, 2_500, "ok"),
    )
    speed = {"dense": 1.0, "pruned": 0.55, "pruned-int8-dynamic": 1.3, "pruned-int8-static": 0.4}
    for a in report["artifacts"]:
        a["latency_vs_dense"] = speed[a["name"]]
    rows = artifact_rows(report, reference_val=0.98, where="t")
    # the smallest file is slower than dense; the fastest (static) misses the 0.5-point budget
    assert trial_score(rows, 0.5, "latency")["artifact"] == "pruned"
    assert trial_score(rows, 0.5, "size")["artifact"] == "pruned-int8-dynamic"
    assert trial_score(rows, None, "latency")["artifact"] == "pruned-int8-static"
    best = trial_score(rows, 0.5, "latency")
    assert objective_values(best, "latency") == [0.55]
    assert objective_values(best, "size") == [9_000]
    assert objective_values(best, "pareto") == [9_000, 0.978]
    within = within_budget(
        [{**r, "label": r["artifact"]} for r in rows], 0.5, by="latency_vs_dense"
    )
    assert within["chosen"] == "pruned"


def test_a_report_without_validation_accuracy_is_a_clear_error():
    report = {
        "artifacts": [
            {"name": "dense", "accuracy": 0.98, "deploy_bytes": 1, "sparsity": 0, "status": "ok"}
        ]
    }
    with pytest.raises(CompressError, match="trial-0001: artifact dense has no val_accuracy"):
        artifact_rows(report, 0.98, "trial-0001")


# ---------------------------------------------------------------- a search on stand-in runs


def test_a_search_on_stand_in_runs_chooses_on_validation_and_writes_typed_json(
    tmp_path, pipeline_writer, monkeypatch
):
    import compress.analysis.runner as runner_module
    from compress.files import write_json

    def run_task(task):  # a higher threshold: smaller files, lower validation accuracy
        t = task.overrides.get("prune.threshold", 0.02)

        def artifact(name, val, deploy):  # test accuracy far off: nothing may choose on it
            return {
                "name": name,
                "val_accuracy": val,
                "accuracy": 1 - val,
                "deploy_bytes": deploy,
                "sparsity": 0.0 if name == "dense" else 0.9,
                "status": "ok",
            }

        report = {
            "artifacts": [
                artifact("dense", 0.98, 50_000),
                artifact("pruned", 0.98 - t / 10, int(1e5 * (0.1 - t))),
                artifact("pruned-int8-dynamic", 0.979 - t / 10, int(4e4 * (0.1 - t))),
            ],
            "stages": [{"name": "train", "cached": task.name != "reference"}],
        }
        write_json(Path(task.run_dir) / "report.json", report)
        return {
            "name": task.name,
            "overrides": task.overrides,
            "run_dir": task.run_dir,
            "report": report,
        }

    monkeypatch.setattr(runner_module, "run_task", run_task)
    path = pipeline_writer(tmp_path / "p.toml")
    summary = run_search(
        path,
        search_spaces(load_pipeline(path), SPACES),
        tmp_path / "out",
        max_drop=0.35,
        trials=4,
        threads=1,
    )
    saved = json.loads((tmp_path / "out/search.json").read_text())
    assert mismatches(saved, Search) == [] and saved == json.loads(json.dumps(summary))
    assert all("accuracy" not in p for p in saved["points"])  # validation accuracy is val_accuracy
    within = [p for p in saved["points"] if p["artifact"] != "dense" and p["drop"] <= 0.35 + 1e-9]
    chosen = min(within, key=lambda p: p["deploy_bytes"])
    assert saved["chosen"] == chosen["label"] and saved["budget"]["chosen"] == chosen["label"]
    assert saved["test_accuracy"] == {chosen["label"]: pytest.approx(1 - chosen["val_accuracy"])}
    assert saved["frontier"] and set(saved["frontier"]) <= {p["label"] for p in saved["points"]}
    assert "## Test accuracy" in (tmp_path / "out/search.md").read_text()


# ---------------------------------------------------------------- real tiny searches


SPACES = ["prune.threshold=(0.01,0.05)"]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory, pipeline_writer):
    folder = tmp_path_factory.mktemp("search")
    path = pipeline_writer(folder / "tiny.toml", FAST)
    out = folder / "out"
    result = CliRunner().invoke(
        main,
        [
            "search",
            str(path),
            "--param",
            SPACES[0],
            "--max-drop",
            "5",
            "--trials",
            "3",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    return path, out, result.output


@pytest.mark.slow
def test_tiny_search_end_to_end(search_run):
    _, out, output = search_run
    summary = json.loads((out / "search.json").read_text())
    assert mismatches(summary, Search) == []
    assert all(t["state"] in ("ok", "misses budget") for t in summary["trials"])  # all finished
    assert len(summary["trials"]) == 3
    assert len({t["overrides"]["prune.threshold"] for t in summary["trials"]}) == 3
    # the reference trained; every trial reused its training through the stage cache
    assert summary["train_runs"] == 0
    assert all("train" in t["stages_reused"] for t in summary["trials"])
    assert summary["stages_reused"] >= 3
    # the first trial is the pipeline's own threshold: every stage came from the reference run
    first = summary["trials"][0]
    assert first["from_file"] and first["overrides"] == {"prune.threshold": 0.02}
    assert len(first["stages_reused"]) == first["stages_total"]
    chosen = summary["chosen"]
    assert chosen and chosen.startswith("trial-")
    point = next(p for p in summary["points"] if p["label"] == chosen)
    assert point["drop"] <= 5 and point["artifact"] != "dense"
    # nothing smaller meets the budget on validation
    assert not any(
        p["deploy_bytes"] < point["deploy_bytes"] and p["drop"] <= 5 and p["artifact"] != "dense"
        for p in summary["points"]
    )
    # test accuracy only for the chosen artifact, read from the run's own report
    assert set(summary["test_accuracy"]) == {chosen}
    report = json.loads((Path(point["run_dir"]) / "report.json").read_text())
    assert summary["test_accuracy"][chosen] == next(
        a["accuracy"] for a in report["artifacts"] if a["name"] == point["artifact"]
    )
    for name in ("search.md", "search-history.png", "search-front.png", "study.journal"):
        assert (out / name).stat().st_size > 0
    markdown = (out / "search.md").read_text()
    assert "## Test accuracy" in markdown and chosen in markdown
    assert "chosen: " + chosen in output and "training ran in 0 of 3 trials" in output


@pytest.mark.slow
def test_resume_runs_only_the_missing_and_interrupted_trials(search_run, tmp_path):
    path, out, _ = search_run
    spaces = search_spaces(load_pipeline(path), SPACES)
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trial-000[0-2]/report.json")}
    assert len(finished) == 3
    # an interrupted trial: asked for, never told (as after Ctrl-C or a killed process)
    study = open_study(out, "size", spaces, 5.0, trials=5, seed=0)
    stale = study.ask()
    stale.suggest_float("prune.threshold", 0.01, 0.05)
    summary = run_search(path, spaces, out, max_drop=5.0, trials=5, threads=1)
    states = [t["state"] for t in summary["trials"]]
    assert states[3] == "interrupted" and len(states) == 6
    assert all(s in ("ok", "misses budget") for i, s in enumerate(states) if i != 3)
    assert summary["trials"][4]["retry_of"] == 3
    assert summary["trials"][4]["overrides"]["prune.threshold"] == pytest.approx(
        stale.params["prune.threshold"], rel=1e-2
    )
    # the finished trials did not run again
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    # the same folder with other settings is refused, not mixed
    with pytest.raises(CompressError, match="holds a search with other settings"):
        run_search(path, spaces, out, max_drop=1.0, trials=5, threads=1)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, pipeline_writer):
    path = pipeline_writer(tmp_path / "tiny.toml", FAST)
    spaces = {"finetune.lr": parse_space("finetune.lr", [1e30])}
    summary = run_search(path, spaces, tmp_path / "out", max_drop=1.0, trials=2, threads=1)
    assert [t["state"] for t in summary["trials"]] == ["fail", "fail"]
    assert all(
        "TrainingError" in t["error"] and "loss became" in t["error"] for t in summary["trials"]
    )
    assert summary["chosen"] is None and summary["counts"]["fail"] == 2
    assert "nothing meets the budget" in (tmp_path / "out" / "search.md").read_text()


def test_the_search_starts_from_the_pipelines_own_settings_when_they_fit(tmp_path, pipeline_writer):
    from compress.analysis.space import file_settings

    config = load_pipeline(pipeline_writer(tmp_path / "p.toml"))
    inside = search_spaces(
        config, ["train.l1.lambda=log(1e-5,1e-3)", 'quantize.variants=[["dynamic","static"]]']
    )
    assert file_settings(config, inside) == {
        "train.l1.lambda": 1e-4,
        "quantize.variants": ["dynamic", "static"],
    }
    assert file_settings(config, search_spaces(config, ["prune.threshold=(0.05,0.08)"])) is None


@pytest.mark.slow
def test_pareto_search_in_worker_processes(tmp_path, pipeline_writer):
    path = pipeline_writer(tmp_path / "tiny.toml", FAST)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "search",
            str(path),
            "--param",
            "prune.threshold=(0.01,0.08)",
            "--objective",
            "pareto",
            "--trials",
            "2",
            "--jobs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "search.json").read_text())
    assert mismatches(summary, Search) == []
    assert (
        summary["objective"] == "pareto" and summary["chosen"] is None and summary["budget"] is None
    )
    assert [t["state"] for t in summary["trials"]] == ["ok", "ok"]
    front = [p for p in summary["points"] if p["label"] in summary["frontier"]]
    assert front and not any(
        q["deploy_bytes"] <= p["deploy_bytes"] and q["val_accuracy"] > p["val_accuracy"]
        for p in front
        for q in summary["points"]
    )
    assert set(summary["test_accuracy"]) == set(summary["frontier"])


def test_a_latency_search_says_what_it_looked_for_and_how_fast_the_choice_is():
    from compress.analysis.search_report import chosen_sentence, trial_rows

    best = {"artifact": "pruned", "val_accuracy": 0.986, "drop": 0.27, "deploy_bytes": 66_972,
            "latency_vs_dense": 0.218}  # fmt: skip
    trial = {"number": 5, "name": "trial-0005", "overrides": {"prune.amount": 0.787},
             "best": best, "state": "ok", "error": None, "from_file": False, "retry_of": None,
             "stages_reused": ["train"], "stages_total": 6}  # fmt: skip
    summary = {
        "pipeline": "lenet5-fast",
        "objective": "latency",
        "max_drop": 0.5,
        "spaces": {"prune.amount": "(0.4, 0.85)"},
        "trials": [trial],
        "points": [{**best, "label": "trial-0005/pruned", "trial": "trial-0005", "run_dir": "r"}],
        "reference": {"dense_val_accuracy": 0.9885, "best": best},
        "budget": {"chosen": "trial-0005/pruned"},
        "chosen": "trial-0005/pruned",
    }
    assert "66,972 deploy bytes, 0.218x dense's latency, validation 98.60%" in chosen_sentence(
        summary
    )
    headers, rows = trial_rows(summary)
    assert rows[0][headers.index("vs dense")] == "0.218x"
    assert "vs dense" not in trial_rows({**summary, "objective": "size"})[0]
