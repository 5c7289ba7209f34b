"""What the benchmark times. Each call measures once; run.py repeats, interleaves and takes medians.

- CompressLoop: compress.training.fit on compress.data's in-memory tensors, one epoch per call.
- TorchvisionLoop: the original recipe, torchvision MNIST + ToTensor + Normalize through a
  DataLoader(shuffle=True) and a plain Python loop, with the same model, optimizer and L1.
- run_pipeline_cli: `compress run PIPELINE --force` in a subprocess, read back from report.json.
- latency_ms: onnxruntime at batch 1 on one intra-op thread, as the verify stage measures it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from compress.checkpoint import build_from_spec, model_spec
from compress.config import OptimConfig, PipelineConfig
from compress.data import DATASETS, Dataset, locate_files
from compress.encode.onnx_tools import get_metadata
from compress.stages.verify import latency_ms, make_session, prepare_inputs
from compress.training import RunSettings, fit, make_optimizer, weight_params


def build_model(config: PipelineConfig, num_classes: int) -> torch.nn.Module:
    """The pipeline's model with the train stage's seeded initialisation."""
    torch.manual_seed(config.data.seed)
    return build_from_spec(model_spec(config.model, config.base_dir, num_classes))


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return math.ceil(data.size("train") / batch_size)


class CompressLoop:
    """compress's training loop, one more epoch per call (resuming from its epoch checkpoint)."""

    def __init__(
        self,
        config: PipelineConfig,
        train: OptimConfig,
        data: Dataset,
        device: torch.device,
        checkpoint: Path,
        threads: int | None = None,
    ):
        self.data, self.train, self.epochs, self.threads = data, train, 0, threads
        self.model = build_model(config, data.num_classes)
        self.run = RunSettings(
            device=device,
            batch_size=config.data.batch_size,
            eval_batch_size=config.data.eval_batch_size,
            seed=config.data.seed,
            resume_path=checkpoint,
            resume_key=checkpoint.stem,
            progress=False,
        )
        checkpoint.unlink(missing_ok=True)

    def epoch(self) -> dict:
        """Seconds of one epoch (training and test evaluation, as fit reports it) and test
        accuracy."""
        self.epochs += 1
        default_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads or default_threads)
        try:
            result = fit(
                self.model,
                self.data,
                self.train.model_copy(update={"epochs": self.epochs}),
                self.run,
                desc="bench",
            )
        finally:
            torch.set_num_threads(default_threads)
        row = result.final
        return {"seconds": row["seconds"], "test_accuracy": row["test_accuracy"]}


def torchvision_layout(data_root: str | Path, into: Path) -> Path:
    """Unpack the MNIST IDX files found under `data_root` as `<into>/MNIST/raw/<name>`."""
    files = locate_files(DATASETS["mnist"], Path(data_root))
    if files is None:
        raise FileNotFoundError(f"MNIST IDX files not found under {data_root}")
    raw = into / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        (raw / path.name.removesuffix(".gz")).write_bytes(data)
    return into


class TorchvisionLoop:
    """The original recipe's loop over torchvision's MNIST, one epoch per call."""

    def __init__(self, config: PipelineConfig, train: OptimConfig, root: Path):
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms

        spec = DATASETS["mnist"]
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((spec.mean,), (spec.std,))]
        )
        train_set = datasets.MNIST(str(root), train=True, transform=transform, download=False)
        test_set = datasets.MNIST(str(root), train=False, transform=transform, download=False)
        shuffle = torch.Generator().manual_seed(config.data.seed)
        self.train_loader = DataLoader(
            train_set, batch_size=config.data.batch_size, shuffle=True, generator=shuffle
        )
        self.test_loader = DataLoader(test_set, batch_size=config.data.eval_batch_size)
        self.model = build_model(config, len(spec.classes))
        self.optimizer = make_optimizer(self.model.parameters(), train)  # the same SGD settings
        self.l1_lambda = train.l1.lambda_ if train.l1.method == "penalty" else 0.0
        self.l1_params = weight_params(self.model, train.l1.params)

    def epoch(self) -> dict:
        started = time.perf_counter()
        self.model.train()
        for x, y in self.train_loader:
            loss = F.cross_entropy(self.model(x), y)
            if self.l1_lambda > 0:
                loss = loss + self.l1_lambda * sum(p.abs().sum() for p in self.l1_params)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        accuracy = self.evaluate()
        return {"seconds": time.perf_counter() - started, "test_accuracy": accuracy}

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        correct = total = 0
        for x, y in self.test_loader:
            correct += (self.model(x).argmax(1) == y).sum().item()
            total += len(y)
        return correct / total


def run_pipeline_cli(
    pipeline: Path, out_dir: Path, data_root: str | None, threads: int | None = None
) -> dict:
    """`compress run PIPELINE --force --out OUT_DIR`: wall seconds and its report.json."""
    command = [
        sys.executable,
        "-m",
        "compress",
        "run",
        str(pipeline),
        "--force",
        "--out",
        str(out_dir),
        "--no-progress",
    ]
    if data_root is not None:
        command += ["--data-root", str(data_root)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    report_path = out_dir / "report.json"
    if done.returncode not in (0, 1) or not report_path.is_file():  # 1: a verification failed
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(command)} exited with status {done.returncode}:\n{tail}")
    return {
        "seconds": seconds,
        "returncode": done.returncode,
        "report": json.loads(report_path.read_text()),
    }


class LatencyProbe:
    """onnxruntime sessions (1 intra-op thread) for every artifact of a finished run."""

    def __init__(self, run_dir: Path, report: dict, pixels: np.ndarray):
        self.sessions, self.inputs = {}, {}
        for artifact in report["artifacts"]:
            path = run_dir / artifact["path"]
            self.sessions[artifact["name"]] = make_session(path, threads=1)
            self.inputs[artifact["name"]] = prepare_inputs(
                pixels, get_metadata(onnx.load(str(path)))
            )

    @property
    def names(self) -> list[str]:
        return list(self.sessions)

    def measure(self, name: str, repetitions: int) -> tuple[float, float]:
        """p50 and p95 milliseconds at batch 1."""
        return latency_ms(self.sessions[name], self.inputs[name], repetitions)
