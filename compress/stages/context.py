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

from compress.cache import StageCache, link_or_copy
from compress.checkpoint import load_checkpoint
from compress.config import OptimConfig, PipelineConfig
from compress.data import Dataset
from compress.files import hash_object, read_json, sha256_file
from compress.training import RunSettings, predict
from compress.version import __version__


@dataclass
class StageContext:
    config: PipelineConfig
    run_dir: Path
    name: str
    key: str
    device: torch.device
    load_data: Callable[[], Dataset]
    progress: bool = True
    outputs: list[Path] = field(
        default_factory=list
    )  # files this stage wrote (hashed for the cache)
    cache: StageCache | None = None  # the stage cache run folders share (sweeps, tune, search)

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.name

    @property
    def data(self) -> Dataset:
        return self.load_data()

    def input(self, stage: str, filename: str) -> Path:
        return self.run_dir / stage / filename

    def metrics(self, stage: str) -> dict[str, Any]:
        """The metrics an earlier stage of this run recorded in its stage.json."""
        return read_json(self.input(stage, "stage.json"))["metrics"]

    def output(self, filename: str, in_run_dir: bool = False) -> Path:
        """A path for a file this stage produces (in its folder, or the run folder for
        artifacts)."""
        path = (self.run_dir if in_run_dir else self.stage_dir) / filename
        self.outputs.append(path)
        return path

    def shared(
        self, part: str, identity: dict[str, Any], files: list[Path], make: Callable[[], dict]
    ) -> tuple[dict, bool]:
        """Do `make()` once for every run folder that shares the stage cache: work that stages
        of different keys have in common, such as exporting and measuring the dense model,
        which depend on the train stage alone while their stages' keys depend on pruning too.

        `make` writes `files` (in the run folder) and returns what it measured (JSON);
        `identity` is everything those depend on (file checksums, settings). The entry
        `<cache>/<part>/<key>/` keeps the files and the result; a run that finds it links the
        files in and gets the result. Returns (result, reused); without a cache, just `make()`."""
        if self.cache is None:
            return make(), False
        key = hash_object({"part": part, "version": __version__, **identity})
        with self.cache.lock(part, key):
            record = self.cache.lookup(part, key, {})
            if record is not None:
                for rel in record["outputs"]:
                    link_or_copy(self.cache.entry(part, key) / rel, self.run_dir / rel)
                return record["metrics"], True
            result = make()
            record = {
                "name": part,
                "key": key,
                "inputs": {},
                "metrics": result,
                "outputs": {str(f.relative_to(self.run_dir)): sha256_file(f) for f in files},
            }
            self.cache.store(record, self.run_dir)
        return result, False

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
            sync_batchnorm=self.config.train.sync_batchnorm,
        )

    def teacher(self, config: OptimConfig) -> dict[str, Any]:
        """modifiers_for()'s teacher arguments when `config` distills: the trained dense model's
        logits on the training set, or, when training images are shifted, the model itself."""
        if config.distill.alpha == 0:
            return {}
        teacher, _, _ = load_checkpoint(self.input("train", "model.pt"))
        augmented = getattr(self.data.augmentation, "active", False)
        if getattr(self.config.data, "shift", 0) or augmented:
            return {"teacher": teacher}
        return {"teacher_logits": predict(teacher, self.data.tensors("train")[0])}
