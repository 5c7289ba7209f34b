"""Search on a shared Optuna storage (`compress search --storage URL`): processes started
apart work on one study; the trial budget counts all their trials, and no trial runs twice.
Trials here are stand-in runs (as in test_search.py), so the test takes seconds."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from compress.analysis.search import StudyOptions, open_storage, run_search, surplus
from compress.analysis.space import search_spaces
from compress.config import load_pipeline
from compress.errors import CompressError

SPACES = ["prune.threshold=(0.01,0.05)"]
BUDGET = 6


def _stand_in(ran: Path):
    """A run_task that records who ran which trial and takes a little time."""
    from compress.files import write_json

    def run_task(task):
        (ran / f"{task.name}.{os.getpid()}").touch()
        time.sleep(0.3)
        t = task.overrides.get("prune.threshold", 0.02)

        def artifact(name, val, deploy):
            return {
                "name": name,
                "val_accuracy": val,
                "accuracy": val,
                "deploy_bytes": deploy,
                "sparsity": 0.0 if name == "dense" else 0.9,
                "status": "ok",
            }

        report = {
            "artifacts": [
                artifact("dense", 0.98, 50_000),
                artifact("pruned", 0.98 - t / 10, int(1e5 * (0.1 - t))),
            ],
            "stages": [{"name": "train", "cached": False}],
        }
        Path(task.run_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(task.run_dir) / "report.json", report)
        return {"name": task.name, "overrides": task.overrides, "run_dir": task.run_dir}

    def with_report(task):
        result = run_task(task)
        result["report"] = json.loads((Path(task.run_dir) / "report.json").read_text())
        return result

    return with_report


def _search(path: Path, out: Path, storage: str, start) -> None:
    start.wait()
    spaces = search_spaces(load_pipeline(path), SPACES)
    run_search(
        path,
        spaces,
        out,
        max_drop=0.35,
        trials=BUDGET,
        threads=1,
        options=StudyOptions(seed=0, storage=storage),
    )


def test_two_processes_share_one_journal_study_and_its_budget(
    tmp_path, pipeline_writer, monkeypatch
):
    import compress.analysis.runner as runner_module
    import compress.pipeline as pipeline_module

    ran = tmp_path / "ran"
    ran.mkdir()
    monkeypatch.setattr(runner_module, "run_task", _stand_in(ran))
    monkeypatch.setattr(pipeline_module, "check_inputs", lambda *args: None)
    path = pipeline_writer(tmp_path / "p.toml")
    out, storage = tmp_path / "out", f"journal://{tmp_path / 'shared' / 'study.log'}"
    fork = multiprocessing.get_context("fork")  # the stand-in is inherited, not pickled
    start = fork.Barrier(2)
    searches = [fork.Process(target=_search, args=(path, out, storage, start)) for _ in "ab"]
    for p in searches:
        p.start()
    for p in searches:
        p.join(timeout=120)
    assert [p.exitcode for p in searches] == [0, 0]

    trials = sorted(f.name for f in ran.iterdir() if f.name.startswith("trial-"))
    names = [t.rpartition(".")[0] for t in trials]
    assert len(names) == BUDGET and len(set(names)) == BUDGET  # the budget, none run twice
    assert len({t.rpartition(".")[2] for t in trials}) == 2  # both processes ran trials
    import optuna

    study = optuna.load_study(study_name="search", storage=open_storage(out, storage))
    counted = [t for t in study.trials if not surplus(t)]
    assert len(counted) == BUDGET and all(t.state.name == "COMPLETE" for t in counted)
    assert not (out / "study.journal").exists()  # the study lives where --storage says
    summary = json.loads((out / "search.json").read_text())  # the last to finish wrote it
    assert len(summary["trials"]) == BUDGET


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    with pytest.raises(CompressError, match="--storage nosuchdb://x"):
        open_storage(tmp_path, "nosuchdb://x")
