"""The one runner of sweep, tune and search: tasks built in one place, the same results in
this process and in worker processes (Ray: tests/test_sweep.py), and failures either
stopping the runs or coming back as results.

The fast tests run a stand-in for the pipeline (`fake_run`, defined here so that spawned
workers can import it); the slow one runs the tiny pipeline inline and in processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress.analysis.runner import Runner, Task, TaskSettings, run_tasks
from compress.errors import CompressError


def fake_run(task: Task) -> dict:
    """A run's result from its overrides alone; `fail` fails it (a pipeline error)."""
    import torch

    if task.overrides.get("fail"):
        raise CompressError(f"{task.name}: failed on purpose\nsecond line")
    value = task.overrides["x"]
    return {
        "name": task.name,
        "overrides": task.overrides,
        "run_dir": task.run_dir,
        "report": {"value": value * value, "threads": torch.get_num_threads()},
    }


def tasks_of(tmp_path: Path, values: list, threads: int | None = 1) -> list[Task]:
    settings = TaskSettings.of(tmp_path / "p.toml", tmp_path / "out", threads=threads)
    return [settings.task(f"x-{v}", {"x": v} if v != "fail" else {"fail": True}) for v in values]


def run_all(tasks: list[Task], jobs: int, keep_going: bool = False) -> list[dict]:
    results = []
    with Runner(jobs, keep_going=keep_going, run=fake_run) as runner:
        for task in tasks:
            runner.submit(task)
        while runner.pending():
            results += runner.wait()
    return sorted(results, key=lambda r: r["name"])


def test_a_task_is_built_in_one_place_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = TaskSettings.of(
        "p.toml",
        "out",
        data_root="~/data",
        device="cuda",
        threads=2,
        what="tune point",
        overrides={"finetune.epochs": 1},
    )
    task = settings.task("amount-0.9", {"prune.amount": 0.9})
    assert task == Task(
        name="amount-0.9",
        overrides={"finetune.epochs": 1, "prune.amount": 0.9},
        pipeline=str(tmp_path / "p.toml"),
        run_dir=str(tmp_path / "out/amount-0.9"),
        data_root=str(Path("~/data").expanduser()),
        cache_dir=str(tmp_path / "out/cache"),
        device="cuda",
        threads=2,
    )
    assert TaskSettings.of("p.toml", "out", cache_dir="shared").task("a", {}).cache_dir == str(
        tmp_path / "shared"
    )
    with pytest.raises(CompressError, match="tune point '../up' is not a usable folder name"):
        settings.task("../up", {})


def test_in_this_process_and_in_worker_processes_the_results_are_the_same(tmp_path):
    tasks = tasks_of(tmp_path, [1, 2, 3])
    inline, processes = run_all(tasks, jobs=1), run_all(tasks, jobs=2)
    assert [r["report"]["value"] for r in inline] == [1, 4, 9]
    assert processes == inline  # threads too: every task asked for 1
    assert [r["run_dir"] for r in inline] == [t.run_dir for t in tasks]


def test_run_tasks_keeps_the_order_of_the_tasks(tmp_path, monkeypatch):
    import compress.analysis.runner as runner_module

    monkeypatch.setattr(runner_module, "run_task", fake_run)  # in this process only
    tasks = tasks_of(tmp_path, [3, 1, 2])
    assert [r["report"]["value"] for r in run_tasks(tasks)] == [9, 1, 4]


def test_a_worker_gets_its_share_of_the_cpus_when_the_task_names_no_threads(tmp_path, monkeypatch):
    import compress.analysis.runner as runner_module

    monkeypatch.setattr(runner_module, "available_cpus", lambda: 6)
    results = run_all(tasks_of(tmp_path, [1, 2], threads=None), jobs=2)
    assert [r["report"]["threads"] for r in results] == [3, 3]  # 6 CPUs, 2 jobs


@pytest.mark.parametrize("jobs", [1, 2])
def test_keep_going_turns_a_failure_into_a_result(tmp_path, jobs):
    results = run_all(tasks_of(tmp_path, [1, "fail", 2]), jobs=jobs, keep_going=True)
    failed = next(r for r in results if r["name"] == "x-fail")
    assert failed["error"] == "CompressError: x-fail: failed on purpose second line"
    assert "report" not in failed
    assert sorted(r["report"]["value"] for r in results if "report" in r) == [1, 4]


@pytest.mark.parametrize("jobs", [1, 2])
def test_without_keep_going_the_first_failure_stops_the_runs(tmp_path, jobs):
    with pytest.raises(CompressError, match="x-fail: failed on purpose"):
        run_all(tasks_of(tmp_path, ["fail", 1]), jobs=jobs)


@pytest.mark.slow
def test_the_tiny_pipeline_gives_the_same_results_in_every_mode(tmp_path, pipeline_writer):
    pipeline = pipeline_writer(
        tmp_path / "tiny.toml", {"quantize.variants": ["dynamic"], "verify.repetitions": 5}
    )
    overrides = [{"prune.threshold": 0.01}, {"prune.threshold": 0.03}]
    modes = {
        "inline": {"jobs": 1},
        "processes": {"jobs": 2},
    }  # Ray: tests/test_sweep.py's sweep on a local cluster
    measured = {}
    for mode, how in modes.items():  # each with its own cache: every mode trains
        settings = TaskSettings.of(pipeline, tmp_path / mode, threads=1)
        tasks = [settings.task(f"t-{o['prune.threshold']}", o) for o in overrides]
        results = run_tasks(tasks, **how)
        assert [r["name"] for r in results] == ["t-0.01", "t-0.03"]
        measured[mode] = [
            {
                "keys": [s["key"] for s in r["report"]["stages"]],
                "artifacts": [
                    (a["name"], a["bytes"], a["deploy_bytes"], a["val_accuracy"], a["accuracy"])
                    for a in r["report"]["artifacts"]
                ],
            }
            for r in results
        ]
        reports = [json.loads((Path(r["run_dir"]) / "report.json").read_text()) for r in results]
        assert [len(r["artifacts"]) for r in reports] == [3, 3]
    assert measured["processes"] == measured["inline"]
