"""Without --threads, `compress run` and `search` train with default_threads(): 1 thread on a
machine of 2 CPUs or fewer (on a busy 2-core machine 2 threads were 10x slower), else the idle
CPUs shared out among the processes, at most 4 each; the caller's setting is kept after."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import compress.threads
from compress.cli import main
from compress.errors import CompressError
from compress.threads import MAX_THREADS, default_threads, torch_threads


@pytest.mark.parametrize("load", [0.0, 0.5, 6.0])
@pytest.mark.parametrize("cpus", [1, 2])
def test_a_machine_of_two_cpus_or_fewer_trains_with_one_thread(cpus, load):
    assert default_threads(cpus=cpus, load=load) == 1


@pytest.mark.parametrize(
    ("cpus", "load", "jobs", "expected"),
    [
        (16, 0.0, 1, MAX_THREADS),  # idle: a few threads, not all 16
        (4, 0.2, 1, 3),  # the idle CPUs
        (16, 13.5, 1, 2),  # busy: what is left
        (16, 30.0, 1, 1),  # overloaded: never below 1
        (8, 0.0, 4, 2),  # shared out among the processes
        (8, 0.0, 16, 1),
    ],
)
def test_a_larger_machine_uses_its_idle_cpus_up_to_a_few(cpus, load, jobs, expected):
    assert default_threads(jobs=jobs, cpus=cpus, load=load) == expected


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


@pytest.fixture
def seen(monkeypatch):
    """Make default_threads() answer 3 (3 per job) and record the threads the pipeline starts
    with."""
    seen = {}
    monkeypatch.setattr(compress.threads, "default_threads", lambda jobs=1: 3 * jobs)

    def fake_run_pipeline(config, **kwargs):
        seen["threads"] = torch.get_num_threads()
        raise CompressError("stopped by the test")

    monkeypatch.setattr("compress.pipeline.run_pipeline", fake_run_pipeline)
    return seen


def test_run_without_threads_trains_with_the_default(tiny_pipeline, seen, tmp_path):
    before = torch.get_num_threads()
    result = CliRunner().invoke(main, ["run", str(tiny_pipeline), "--out", str(tmp_path / "r")])
    assert "stopped by the test" in result.output and seen["threads"] == 3
    assert torch.get_num_threads() == before


def test_run_with_threads_trains_with_that_many(tiny_pipeline, seen, tmp_path):
    CliRunner().invoke(
        main, ["run", str(tiny_pipeline), "--out", str(tmp_path / "r"), "--threads", "2"]
    )
    assert seen["threads"] == 2


@pytest.mark.parametrize(
    ("args", "expected"), [([], 3), (["--jobs", "2"], 6), (["--threads", "5"], 5)]
)
def test_search_without_threads_gives_each_trial_the_default(
    tiny_pipeline, monkeypatch, args, expected
):
    monkeypatch.setattr(compress.threads, "default_threads", lambda jobs=1: 3 * jobs)
    given = {}

    def fake_run_search(*args, **kwargs):
        given.update(kwargs)
        raise CompressError("stopped by the test")

    monkeypatch.setattr("compress.analysis.search.run_search", fake_run_search)
    result = CliRunner().invoke(
        main,
        [
            "search",
            str(tiny_pipeline),
            "--param",
            "prune.threshold=(0.01,0.05)",
            "--max-drop",
            "1",
            *args,
        ],
    )
    assert "stopped by the test" in result.output, result.output
    assert given["threads"] == expected
