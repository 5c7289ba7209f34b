"""Bundles: a run's ONNX files and a bench.py that needs only numpy and onnxruntime, whose
timings `compress report --device-timings` shows beside the host's."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from click.testing import CliRunner

from compress.bundle import bundle_files, write_bundle
from compress.cli import main
from compress.errors import CompressError
from compress.files import write_json

ALLOWED = {"__future__", "argparse", "json", "math", "os", "platform", "time", "numpy"}


@pytest.fixture
def run_dir(tmp_path, pruned_export):
    """A finished run folder as verify leaves it: report.json and two artifacts."""
    run = tmp_path / "tiny"
    run.mkdir()
    artifacts = []
    for name, ratio in (("dense", 1.0), ("pruned", 0.62)):
        shutil.copy(pruned_export.path, run / f"{name}.onnx")
        artifacts.append(
            {
                "name": name,
                "path": f"{name}.onnx",
                "latency_ms_b1_p50": 0.05 * ratio,
                "latency_vs_dense": ratio,
                "latency_vs_dense_low": ratio - 0.04,
                "latency_vs_dense_high": ratio + 0.04,
            }
        )
    write_json(run / "report.json", {"pipeline": "tiny", "artifacts": artifacts[::-1]})
    write_json(run / "pipeline.json", {"verify": {"repetitions": 20, "rounds": 6}})
    return run


def test_the_bench_script_imports_only_numpy_onnxruntime_and_the_standard_library(run_dir):
    _, files = bundle_files(run_dir)
    tree = ast.parse(files["bench.py"].decode())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == ALLOWED | {"onnxruntime"}
    manifest = json.loads(files["manifest.json"])
    assert [a["name"] for a in manifest["artifacts"]] == ["dense", "pruned"]  # dense first
    assert manifest["artifacts"][0]["input_shape"][1:] == [1, 28, 28]


def test_a_bundle_times_its_files_without_compress_or_torch_and_report_shows_both(
    run_dir, tmp_path
):
    archive = write_bundle(run_dir, tmp_path / "b.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == [
            f"tiny-bundle/{n}" for n in ("bench.py", "dense.onnx", "manifest.json", "pruned.onnx")
        ]
        z.extractall(tmp_path / "device")
    bench = tmp_path / "device" / "tiny-bundle" / "bench.py"
    out = tmp_path / "timings.json"
    poisoned = (  # importing either would raise ImportError
        "import sys, runpy; sys.modules['torch'] = None; sys.modules['compress'] = None; "
        f"sys.argv = ['bench.py', '-o', {str(out)!r}, '--repetitions', '12', '--rounds', '6']; "
        f"runpy.run_path({str(bench)!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", poisoned],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    timings = json.loads(out.read_text())
    assert [a["name"] for a in timings["artifacts"]] == ["dense", "pruned"]
    assert timings["artifacts"][0]["latency_vs_dense"] == 1.0 and timings["rounds"] == 6
    assert all(a["latency_ms_b1_p50"] > 0 for a in timings["artifacts"])

    result = CliRunner().invoke(main, ["report", str(run_dir), "--device-timings", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "device:" in lines[0] and "onnxruntime" in lines[0]
    pruned = next(line for line in lines if line.startswith("pruned"))
    assert "0.62x [0.58, 0.66]" in pruned and pruned.count("x [") == 2  # host and device


def test_a_tar_bundle_and_the_mistakes_that_end_in_one_line(run_dir, tmp_path):
    archive = write_bundle(run_dir, tmp_path / "b.tar.gz")
    with tarfile.open(archive) as t:
        assert "tiny-bundle/bench.py" in t.getnames()
    with pytest.raises(CompressError, match=r"name a \.zip or \.tar\.gz file"):
        write_bundle(run_dir, tmp_path / "b.rar")
    (run_dir / "pruned.onnx").unlink()
    with pytest.raises(CompressError, match="pruned.onnx is missing"):
        write_bundle(run_dir, tmp_path / "c.zip")
    assert not (tmp_path / "c.zip").exists()
    (tmp_path / "bad.json").write_text("{}")
    result = CliRunner().invoke(
        main, ["report", str(run_dir), "--device-timings", str(tmp_path / "bad.json")]
    )
    assert result.exit_code == 2 and "not a timings file written by bench.py" in result.output
