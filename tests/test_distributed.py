"""Data-parallel training (compress.distributed): `compress run --nproc 2` on gloo trains the
same steps as one process, keeps the ranks' weights equal, writes only through rank 0, and
ends in one line when a rank dies, after which the same command resumes."""

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

from compress.config import load_pipeline
from compress.distributed import PeerLost, failure_line, part_of
from compress.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
# Validation accuracy of 2 ranks against 1 process: the same batches and learning rate, so
# only the order of float sums differs; 1 point is 2 of the slice's 199 validation samples.
NOISE = 0.01
EPOCHS = 8  # long enough to kill a rank in the middle of training


def test_each_rank_takes_its_slice_of_the_global_batch():
    parts = [part_of(10, 3, r) for r in range(3)]
    assert [p[0] for p in parts] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert sum(p[1] for p in parts) == pytest.approx(1.0)
    # a batch smaller than the world: the rank without samples runs it with weight 0
    assert part_of(1, 2, 0) == (slice(0, 1), 1.0)
    assert part_of(1, 2, 1) == (slice(None), 0.0)


def test_the_ranks_run_the_command_without_nproc():
    from compress.cli import _without_nproc

    args = ["-v", "run", "p.toml", "--nproc", "2", "--threads", "1", "--nproc=3", "--out", "r"]
    assert _without_nproc(args) == ["-v", "run", "p.toml", "--threads", "1", "--out", "r"]


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="needs fewer than 2 GPUs")
def test_more_processes_than_gpus_is_one_line_before_any_process(pipeline_writer, tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    pipeline = pipeline_writer(tmp_path / "tiny.toml")
    result = CliRunner().invoke(main, ["run", str(pipeline), "--nproc", "2", "--device", "cuda"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --nproc 2 --device cuda: this machine has {torch.cuda.device_count()} GPUs"
    ]


class Failure:
    def __init__(self, exitcode, local_rank, timestamp=0, pid=100):
        self.exitcode, self.local_rank, self.timestamp, self.pid = (
            exitcode,
            local_rank,
            timestamp,
            pid,
        )

    def signal_name(self):
        return signal.Signals(-self.exitcode).name


def test_a_launch_failure_is_one_line_naming_the_rank_that_stopped_first(tmp_path):
    # rank 1 killed; rank 0 lost its peer (or was stopped by the launcher) a little earlier
    status, line = failure_line(
        {0: Failure(PeerLost.exit_status, 0, timestamp=1), 1: Failure(-9, 1, timestamp=2)},
        tmp_path,
    )
    assert status == 1 and line.startswith("rank 1 (pid 100) was killed by SIGKILL")
    # rank 0 aborted by gloo when its peer vanished, seen at the same moment: rank 1 still
    status, line = failure_line(
        {0: Failure(-signal.SIGABRT, 0, timestamp=2), 1: Failure(-9, 1, timestamp=2)}, tmp_path
    )
    assert status == 1 and line.startswith("rank 1 (pid 100) was killed by SIGKILL")
    # rank 0's own error: it printed its line, the launcher adds none
    assert failure_line({0: Failure(2, 0), 1: Failure(143, 1)}, tmp_path) == (2, None)
    # another rank's own error line is read from its log
    log = tmp_path / "run" / "attempt_0" / "1" / "stderr.log"
    log.parent.mkdir(parents=True)
    log.write_text("some log\nerror: data file missing here\n")
    assert failure_line({0: Failure(-15, 0), 1: Failure(2, 1)}, tmp_path) == (
        2,
        "rank 1: data file missing here",
    )


def _launch(pipeline: Path, out: Path, tmp: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "compress", "run", str(pipeline), "--out", str(out)]
    command += ["--threads", "1", "--no-progress", "--nproc", "2"]
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "COMPRESS_DIST_TIMEOUT": "60"}
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, **popen)


def _child_with_rank(parent: int, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def _kill_rank_1_after_an_epoch(run: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 240
    while not (out / "train" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = _child_with_rank(run.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks in /proc")
def test_two_gloo_ranks_train_in_step_like_one_process_and_resume_after_a_kill(
    pipeline_writer, tmp_path
):
    pipeline = pipeline_writer(tmp_path / "tiny.toml", {"train.epochs": EPOCHS})
    out, tmp = tmp_path / "ranks", tmp_path / "tmp"
    # rank 1 killed mid-training: one error line, no traceback
    run = _launch(pipeline, out, tmp, stderr=subprocess.PIPE)
    _kill_rank_1_after_an_epoch(run, out)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 1" in errors[0] and "SIGKILL" in errors[0], stderr
    assert "Traceback" not in stderr
    # the same command resumes from rank 0's last checkpoint and finishes
    again = _launch(pipeline, out, tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "error:" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert all(a["status"] == "ok" for a in report["artifacts"])
    train = json.loads((out / "train" / "stage.json").read_text())["metrics"]
    assert 1 <= train["resumed_from_epoch"] < EPOCHS
    alone = run_pipeline(load_pipeline(pipeline), out_dir=tmp_path / "alone", until="finetune")
    for one in alone["stages"]:
        two = json.loads((out / one["name"] / "stage.json").read_text())["metrics"]
        assert abs(two["val_accuracy"] - one["metrics"]["val_accuracy"]) <= NOISE
        # the ranks' checksums were compared after every epoch of every training stage
        assert len(two["epochs"]) == len(one["metrics"]["epochs"])
        assert all(row["ranks"] == 2 and "checksum" in row for row in two["epochs"])
    # rank 1 wrote only into a scratch folder of its own, removed at its end
    assert [p for p in tmp.iterdir() if p.name.startswith("compress-")] == []
