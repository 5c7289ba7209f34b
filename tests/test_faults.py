"""Faults end in one `error:` line: file-system failures (full disk, read-only folder, no
permission) with status 1, the path and what is needed; models that cannot be exported
found before training (status 2); signals. Never a traceback, never a half-written file,
and a rerun after the fix resumes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import compress.checkpoint
import compress.encode.onnx_tools
import compress.report
from compress.cli import main
from compress.errors import FileSystemError, file_system_error, os_error_in
from compress.files import atomic_path, locked_dir, write_bytes

BRANCHY_MODEL = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        if x.sum() > 0:  # data-dependent control flow: no ONNX graph can hold it
            return self.fc(x)
        return -self.fc(x)
"""


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result, status: int) -> str:
    """The one `error:` line of a failed command (asserting status and no traceback)."""
    assert result.exit_code == status, f"{result.output}\n{result.exception!r}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return errors[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")] if folder.exists() else []


def enospc(path=None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


# -- the library: errors are named after the path, whatever wrapped them -------------------


def test_a_writer_s_wrapped_no_space_error_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(FileSystemError) as caught, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        try:  # what torch.save does: the OSError chained into its own RuntimeError
            raise enospc()
        except OSError as exc:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 64"
            ) from exc
    assert str(target) in str(caught.value) and "no space left on device" in str(caught.value)
    assert "free disk space" in str(caught.value) and caught.value.exit_status == 1
    assert list(tmp_path.iterdir()) == []


def test_os_error_in_finds_the_cause_and_nothing_else():
    try:
        try:
            raise PermissionError(errno.EACCES, "Permission denied", "/x")
        except OSError as exc:
            raise ValueError("wrapped") from exc
    except ValueError as wrapped:
        assert os_error_in(wrapped).errno == errno.EACCES
    assert os_error_in(ValueError("plain")) is None


@pytest.mark.parametrize(
    ("code", "needed"),
    [
        (errno.EROFS, "writable folder"),
        (errno.EACCES, "permission"),
        (errno.ENOSPC, "free disk space"),
    ],
)
def test_each_file_system_error_says_what_is_needed(code, needed):
    message = str(file_system_error(OSError(code, os.strerror(code), "/runs/x/.lock")))
    assert message.startswith("cannot ") and "/runs/x/.lock" in message and needed in message


# -- the command line ------------------------------------------------------------------------


def test_a_read_only_run_folder_is_one_line(tiny_pipeline, tmp_path, monkeypatch):
    out = tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    line = error_line(invoke("run", tiny_pipeline, "--out", out, "--no-progress"), 1)
    assert str(out) in line and "read-only file system" in line and "--out" in line
    assert not (tmp_path / "ro").exists()


def test_a_lock_file_without_permission_is_one_line(tiny_pipeline, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_open = open

    def no_permission(file, *args, **kwargs):
        if str(file).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_permission)
    line = error_line(invoke("run", tiny_pipeline, "--out", out, "--no-progress"), 1)
    assert str(out / ".lock") in line and "permission denied" in line
    assert temp_files(out) == []


def test_an_out_folder_that_is_a_file_is_one_line(tiny_pipeline, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    line = error_line(invoke("run", tiny_pipeline, "--out", out / "run", "--no-progress"), 1)
    assert str(out) in line
    assert out.read_text() == "not a folder"


def test_an_unreadable_data_file_is_one_line(tmp_path, pipeline_file, mnist_root, monkeypatch):
    real_open = open

    def no_permission(file, *args, **kwargs):
        if "t10k-images" in str(file):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_permission)
    monkeypatch.setattr("gzip.open", no_permission)
    line = error_line(invoke("run", pipeline_file(), "--out", tmp_path / "run", "--no-progress"), 1)
    assert "t10k-images" in line and "permission denied" in line
    assert not (tmp_path / "run").exists()


def test_a_corrupt_report_is_one_line(tmp_path):
    (tmp_path / "report.json").write_text('{"pipeline": "x", "artifacts": [')
    line = error_line(invoke("report", tmp_path), 2)
    assert str(tmp_path / "report.json") in line and "not valid JSON" in line


def test_a_report_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "report.json").write_text("{}")
    monkeypatch.setattr(
        compress.report,
        "read_json",
        lambda path: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(path))
        ),
    )
    line = error_line(invoke("report", tmp_path), 1)
    assert str(tmp_path / "report.json") in line and "permission denied" in line


def test_a_full_disk_while_writing_an_onnx_file_is_one_line(tmp_path, monkeypatch):
    def full(model, path, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise enospc()

    monkeypatch.setattr(compress.encode.onnx_tools.onnx, "save_model", full)
    import onnx

    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    with pytest.raises(FileSystemError, match="free disk space"):
        compress.encode.onnx_tools.save_model(model, tmp_path / "dense.onnx", check=False)
    assert list(tmp_path.iterdir()) == []


def test_a_locked_folder_on_a_read_only_disk_is_a_file_system_error(tmp_path, monkeypatch):
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda f, *a, **k: (
            (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system", str(f)))
            if str(f).endswith(".lock")
            else real_open(f, *a, **k)
        ),
    )
    with pytest.raises(FileSystemError, match="read-only"), locked_dir(tmp_path / "run"):
        pass


def test_no_half_written_file_when_a_write_fails_midway(tmp_path):
    target = tmp_path / "report.json"
    write_bytes(target, b"old and whole")

    class Full:
        def write(self, data):
            raise enospc()

    with pytest.raises(FileSystemError), atomic_path(target) as tmp:
        tmp.write_bytes(b"new but ")
        Full().write(b"cut")
    assert target.read_bytes() == b"old and whole" and temp_files(tmp_path) == []


def test_an_unexportable_model_fails_validate_in_seconds(tmp_path):
    (tmp_path / "branchy.py").write_text(BRANCHY_MODEL)
    pipeline = tmp_path / "branchy.toml"
    pipeline.write_text('[model]\npath = "branchy.py"\nclass = "Net"\n')
    started = time.perf_counter()
    line = error_line(invoke("validate", pipeline), 2)
    assert time.perf_counter() - started < 60  # an export attempt, not a training run
    assert "cannot be exported to ONNX" in line and "data-dependent control flow" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branchy.py", "branchy.toml"]


def test_an_unexportable_model_stops_run_before_training(tmp_path, pipeline_file):
    (tmp_path / "branchy.py").write_text(BRANCHY_MODEL)
    pipeline = pipeline_file({"model": {"path": "branchy.py", "class": "Net"}}, name="branchy")
    line = error_line(invoke("run", pipeline, "--out", tmp_path / "run", "--no-progress"), 2)
    assert "cannot be exported to ONNX" in line
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.slow
def test_no_space_during_fine_tuning_then_a_rerun_resumes(tmp_path, tiny_pipeline, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    failures = []

    def full_once(obj, f, *args, **kwargs):
        if "finetune" in str(getattr(f, "name", f)) and not failures:
            failures.append(f)
            f.write(b"partial")
            try:
                raise enospc()
            except OSError as exc:  # as torch.save reports it
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:672] . unexpected pos 1984"
                ) from exc
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(compress.checkpoint.torch, "save", full_once)
    first = invoke("run", tiny_pipeline, "--out", out, "--no-progress")
    line = error_line(first, 1)
    assert str(out / "finetune") in line and "no space left on device" in line and "resume" in line
    assert temp_files(out) == [] and not (out / "finetune" / "model.pt").exists()
    assert not (out / "finetune" / "stage.json").exists()

    second = invoke("run", tiny_pipeline, "--out", out, "--no-progress")  # the disk has room again
    assert second.exit_code == 0, second.output
    stages = {
        s["name"]: s["cached"] for s in json.loads((out / "report.json").read_text())["stages"]
    }
    assert stages["train"] and stages["prune"] and not stages["finetune"]


@pytest.mark.slow
def test_sigterm_ends_a_run_with_one_line_and_status_143(tmp_path, tiny_pipeline):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compress",
            "run",
            str(tiny_pipeline),
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "run.log").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal landed")
    assert proc.returncode == 143, err
    assert "terminated; run the same command again to resume" in err and "Traceback" not in err
    assert temp_files(out) == []


@pytest.mark.parametrize(
    "damage", [b"", b"{not json", b"[1, 2]", b'{"key": "other"}', b"\xff\xfe\x00"]
)
def test_a_corrupt_cache_entry_is_not_used_and_raises_nothing(tmp_path, damage):
    from compress.cache import StageCache

    cache = StageCache(tmp_path / "cache")
    entry = cache.entry("train", "k1")
    entry.mkdir(parents=True)
    (entry / "stage.json").write_bytes(damage)
    assert cache.lookup("train", "k1", {}) is None
    assert cache.fetch("train", "k1", {}, tmp_path / "run") is None
    assert not (tmp_path / "run").exists()  # nothing linked from a bad entry


def test_a_cache_folder_on_a_read_only_disk_is_one_line(tmp_path, pipeline_file, monkeypatch):
    cache = tmp_path / "cache"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(cache)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = invoke(
        "sweep",
        pipeline_file(),
        "--set",
        "prune.threshold=0.01,0.02",
        "--out",
        tmp_path / "sweep",
        "--cache",
        cache,
    )
    line = error_line(result, 1)
    assert str(cache) in line and "read-only" in line
    assert temp_files(tmp_path) == []
