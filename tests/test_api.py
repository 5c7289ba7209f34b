"""The Python API: `from compress import load_pipeline, run_pipeline` runs a pipeline file and
returns a RunReport, report.json with attribute access; `import compress` loads no torch,
finds the installed package from any folder, and reads its one version number."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import compress
from compress.results import Artifact, ArtifactRow, Report, RunReport, keys_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, pipeline_writer):
    from compress import load_pipeline, run_pipeline

    folder = tmp_path_factory.mktemp("api")
    config = load_pipeline(pipeline_writer(folder / "tiny.toml"))
    return run_pipeline(config, out_dir=folder / "run", progress=False), folder / "run"


@pytest.mark.slow
def test_run_pipeline_returns_the_report_with_attributes(api_run):
    report, run_dir = api_run
    assert isinstance(report, RunReport) and report.run_dir == run_dir
    assert json.loads((run_dir / "report.json").read_text()) == report  # the same content
    assert [a.name for a in report.artifacts] == [
        "dense",
        "pruned",
        "pruned-int8-dynamic",
        "pruned-int8-static",
    ]
    for artifact in report.artifacts:
        assert isinstance(artifact, ArtifactRow)
        assert artifact.accuracy == artifact["accuracy"] and 0.5 < artifact.accuracy <= 1
        assert artifact.deploy_bytes > 0 and (run_dir / artifact.path).is_file()
    assert report.artifact("pruned-int8-static").compression > 1
    assert report.training.dense_test_accuracy == report["training"]["dense_test_accuracy"]
    assert report.dataset.name == "mnist" and report.total_seconds > 0
    assert [s.name for s in report.stages] == [
        "train",
        "prune",
        "finetune",
        "export",
        "quantize",
        "verify",
    ]


def small_report() -> Report:
    artifact = dict.fromkeys(keys_of(Artifact), 0) | {"name": "dense", "accuracy": 0.9}
    artifact.pop("compression")  # a key the report adds: absent, it reads as None
    return {
        **dict.fromkeys(keys_of(Report)),
        "artifacts": [artifact],
        "stages": [],
        "dataset": {"name": "mnist"},
        "training": {"dense_test_accuracy": 0.9},
        "total_seconds": 1.5,
    }


def test_a_run_report_reads_its_keys_as_attributes(tmp_path):
    report = RunReport(small_report(), tmp_path)
    assert report.total_seconds == 1.5 and report.artifacts[0].accuracy == 0.9
    assert (
        report.artifact("dense") is report.artifacts[0] and report.artifacts[0].compression is None
    )
    assert report["artifacts"][0]["accuracy"] == 0.9 and json.loads(json.dumps(report)) == report


def test_an_unknown_name_is_an_error_that_lists_the_keys(tmp_path):
    report = RunReport(small_report(), tmp_path)
    with pytest.raises(AttributeError, match="ArtifactRow has no 'acuracy'; keys: .*accuracy"):
        _ = report.artifacts[0].acuracy
    with pytest.raises(KeyError, match="no artifact 'pruned'; artifacts: dense"):
        report.artifact("pruned")


def test_a_run_report_crosses_processes_whole(tmp_path):
    copy = pickle.loads(pickle.dumps(RunReport(small_report(), tmp_path)))
    assert (
        isinstance(copy, RunReport)
        and copy.run_dir == tmp_path
        and copy.artifacts[0].accuracy == 0.9
    )


def python(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_import_compress_is_light_and_exports_the_api(tmp_path):
    result = python(
        "import sys, compress; print('torch' in sys.modules, callable(compress.run_pipeline), "
        "callable(compress.load_pipeline), 'torch' in sys.modules)",
        tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )  # this tree's package, wherever it is installed from
    assert result.stdout.split() == ["False", "True", "True", "True"], result.stderr


def test_import_compress_beside_a_clone_named_compress(tmp_path):
    # A clone folder called compress/ in the current folder is a namespace package to Python;
    # an install that puts a path entry on sys.path (`make install`: editable_mode=strict)
    # is found before it, a meta-path finder (pip's default editable install) is not. So this
    # checks how the package is installed: it passes once `make install` has installed it.
    (tmp_path / "compress").mkdir()
    result = python("import compress; print(compress.__version__)", tmp_path)
    assert result.stdout.strip() == compress.__version__, (
        f"{result.stderr.strip().splitlines()[-1:]}: install with make install "
        f"(pip install -e . --config-settings editable_mode=strict)"
    )


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "compress.__version__"}
    assert sum("__version__ = " in p.read_text() for p in (ROOT / "compress").rglob("*.py")) == 1
