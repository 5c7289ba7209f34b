"""What a stage's `run` function receives: the resolved config, data, folders, device.

    def run(ctx: StageContext) -> dict:   # returns the stage's metrics
        model, masks, spec = load_checkpoint(ctx.input("train", "model.pt"))
        ...
        save_checkpoint(ctx.output("model.pt"), model, spec)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.checkpoint import load_checkpoint
from compress.config import OptimConfig, PipelineConfig
from compress.data import Dataset
from compress.training import RunSettings, predict


@dataclass
class StageContext:
    config: PipelineConfig
    run_dir: Path
    name: str
    key: str
    device: torch.device
    load_data: Callable[[], Dataset]
    progress: bool = True
    outputs: list[Path] = field(default_factory=list)  # files this stage wrote (hashed for the cache)

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.name

    @property
    def data(self) -> Dataset:
        return self.load_data()

    def input(self, stage: str, filename: str) -> Path:
        return self.run_dir / stage / filename

    def output(self, filename: str, in_run_dir: bool = False) -> Path:
        """A path for a file this stage produces (in its folder, or the run folder for artifacts)."""
        path = (self.run_dir if in_run_dir else self.stage_dir) / filename
        self.outputs.append(path)
        return path

    def run_settings(self, resume: bool = True) -> RunSettings:
        data_cfg = self.config.data
        return RunSettings(
            device=self.device,
            batch_size=data_cfg.batch_size,
            eval_batch_size=data_cfg.eval_batch_size,
            seed=data_cfg.seed,
            shift=getattr(data_cfg, "shift", 0),
            resume_path=self.stage_dir / "last.pt" if resume else None,
            resume_key=self.key,
            progress=self.progress,
        )

    def teacher(self, config: OptimConfig) -> dict[str, Any]:
        """modifiers_for()'s teacher arguments when `config` distills: the trained dense model's logits
        on the training set, or, when training images are shifted, the model itself."""
        if config.distill.alpha == 0:
            return {}
        teacher, _, _ = load_checkpoint(self.input("train", "model.pt"))
        if getattr(self.config.data, "shift", 0):
            return {"teacher": teacher}
        return {"teacher_logits": predict(teacher, self.data.tensors("train")[0])}
