"""Kill `compress run` mid-training, run it again: it resumes and ends where an
uninterrupted run with the same seed ends, to the byte.

One real process is interrupted with SIGINT (Ctrl-C) during training; the rerun resumes
from the last epoch checkpoint and is killed with SIGKILL during fine-tuning; the third run
reuses train and prune, resumes fine-tuning and finishes. A reference run of the same
pipeline, uninterrupted, runs in the test's own process, on one thread like the others.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_mnist import write_pipeline, write_tiny_mnist

from compress.config import load_pipeline
from compress.pipeline import run_pipeline

TRAIN_EPOCHS, FINETUNE_EPOCHS = 6, 4
# Files that must be byte-identical between the interrupted and the uninterrupted run.
SAME_BYTES = [
    "train/model.pt",
    "prune/model.pt",
    "finetune/model.pt",
    "dense.onnx",
    "pruned.onnx",
    "pruned-int8-dynamic.onnx",
]


def start(pipeline: Path, out: Path) -> subprocess.Popen:
    # One thread each: the same arithmetic in every process, and less fighting for the CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compress",
            "run",
            str(pipeline),
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=pipeline.parent,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {path.name} appeared:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


def checkpoint_epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


@pytest.mark.slow
def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path: Path):
    data = write_tiny_mnist(tmp_path / "data")
    pipeline = write_pipeline(
        tmp_path / "resume.toml",
        data,
        train={"epochs": TRAIN_EPOCHS},
        finetune={"epochs": FINETUNE_EPOCHS},
    )
    run_dir, ref_dir = tmp_path / "run", tmp_path / "reference"

    # 1. Ctrl-C once the first training epoch is saved.
    first = start(pipeline, run_dir)
    wait_for(run_dir / "train" / "last.pt", first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    assert not (run_dir / "train" / "stage.json").exists(), "the SIGINT landed after training ended"
    done = checkpoint_epoch(run_dir / "train" / "last.pt")
    assert 1 <= done < TRAIN_EPOCHS

    # 2. The same command resumes training; SIGKILL it during fine-tuning.
    second = start(pipeline, run_dir)
    wait_for(run_dir / "finetune" / "last.pt", second)
    second.kill()
    _, err = second.communicate(timeout=60)
    assert second.returncode == -signal.SIGKILL
    assert f"resuming from epoch {done} checkpoint" in err
    assert (run_dir / "train" / "stage.json").exists()
    assert not (run_dir / "finetune" / "stage.json").exists(), (
        "the SIGKILL landed after fine-tuning ended"
    )
    tuned = checkpoint_epoch(run_dir / "finetune" / "last.pt")
    assert 1 <= tuned < FINETUNE_EPOCHS

    # 3. Again: train and prune are reused, fine-tuning resumes, the run finishes.
    third = start(pipeline, run_dir)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert "train    cached" in err and "prune    cached" in err
    assert f"resuming from epoch {tuned} checkpoint" in err
    assert not list(run_dir.rglob("*.tmp")), "temporary files of the killed run were left behind"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = run_pipeline(load_pipeline(pipeline), out_dir=ref_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"] == expected["training"]
    accuracy = {a["name"]: (a["accuracy"], a["nonzero_params"]) for a in report["artifacts"]}
    assert accuracy == {
        a["name"]: (a["accuracy"], a["nonzero_params"]) for a in expected["artifacts"]
    }
    assert [s["cached"] for s in report["stages"]] == [True, True, False, False, False, False]
    # Training, pruning and export are deterministic on the CPU, so the files are the same
    # to the byte (checkpoints included: they are saved without the temporary file's name).
    for rel in SAME_BYTES:
        assert (run_dir / rel).read_bytes() == (ref_dir / rel).read_bytes(), rel
