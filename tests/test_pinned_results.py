"""Pinned results: the weights each training stage writes, at one thread, are fixed bytes.

A change to how the training loop is organised (its hooks, its modules) must not change
what it computes. These recipes run train, prune and finetune on the tiny MNIST slice and
compare the sha256 of every stage's weights (and masks) with digests recorded once; a
deliberate change of results records new ones (the failure message shows them).

- the shipped pipelines/mnist.toml (L1 penalty, threshold pruning, fine-tuning);
- an MLP with group L1 (proximal), gradual magnitude pruning with distillation and
  int8 fake quantization, then fine-tuning with L1, int4 fake quantization, distillation
  and weight sharing;
- a small CNN (channels_last on the CPU) on shifted images: reweighted L1 with weight
  decay, variational dropout with distillation, fine-tuning with group L1 on channels and
  distillation from the teacher model run on each batch.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import dump_toml, merge, tiny_pipeline_data

from compress.checkpoint import safe_load
from compress.config import load_pipeline
from compress.pipeline import run_pipeline
from compress.stages import export

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "prune", "finetune")

CNN_SOURCE = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
"""

MLP_MODIFIERS = {
    "train.l1": {"lambda": 1e-3, "method": "proximal", "groups": "neurons"},
    "prune.method": "magnitude",
    "prune.amount": 0.6,
    "prune.schedule": "gradual",
    "prune.gradual": {
        "epochs": 2,
        "lr": 0.02,
        "steps": 4,
        "ramp": 0.5,
        "qat_bits": 8,
        "distill": {"alpha": 0.5, "temperature": 2.0},
    },
    "finetune.epochs": 1,
    "finetune.qat_bits": 4,
    "finetune.l1": {"lambda": 1e-4, "method": "penalty"},
    "finetune.distill": {"alpha": 0.3},
    "finetune.share": {"bits": 3, "epochs": 1, "lr": 1e-3, "biases": True},
}

CNN_MODIFIERS = {
    "data.shift": 1,
    "data.batch_size": 250,
    "model": {"path": "cnn.py", "class": "Net"},
    "train": {
        "epochs": 1,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "l1": {"lambda": 1e-4, "method": "reweighted"},
    },
    "prune.method": "variational",
    "prune.kl_weight": 2.0,
    "prune.variational": {"epochs": 1, "lr": 2e-3, "distill": {"alpha": 0.5}},
    "finetune": {
        "epochs": 1,
        "lr": 0.01,
        "optimizer": "adam",
        "l1": {"lambda": 1e-4, "method": "proximal", "groups": "channels"},
        "distill": {"alpha": 0.5},
    },
}

# Float training is bit-reproducible on one machine, not across CPUs: MKL and oneDNN pick
# kernels by vendor and instruction set, and their sums round differently. So each recipe
# holds one set of digests per kind of machine they were recorded on (all from the same
# code, at one thread); the weights must equal one of them. A new kind of machine fails
# with its digests in the message: record them as a new set after checking, on a machine
# already recorded, that the code gives the old ones.
PINNED = {
    "mnist.toml": (
        {  # the first machine (commit 8a6e721)
            "train": "43985ddbae2df4c599df45f27a09042ea5ee104219106428e729899af775a55e",
            "prune": "f74c8f64b79a6e7a0790d0384cad80ba0f284f5ff30a98b677b6f15962905001",
            "finetune": "7bb02ec641535d0b6659c0fb25fc33a19e42d0499ec9f30f1f52050bce637240",
        },
        {  # AMD EPYC, AVX512 (commit 217e87e)
            "train": "55c8b27001afa3a87b36ff60680f9928f6757686dbfe25240565bd490276543f",
            "prune": "2a4bffc8d43260bc21b645d8f3e3c46fb6e007ac7f3e06c31e29dbe35e277f5b",
            "finetune": "4a7433d7dea5e13c17e7818c679435f6c2e252b245b17ba30171cb8aa68f4eca",
        },
    ),
    "mlp-modifiers": (
        {
            "train": "e772e3b7d62cf52e1b0a00cff07299ff6803fc6d25bcbacbd23469d62d7d12a7",
            "prune": "1e3f1021f1aedfe6cf4c6e57ba1810f2d26ea4fa7c1129a7a71479c683803b68",
            "finetune": "3254694acf32b1b14303eff70a98c7b673d9710476eb2ed4839af1c18e9c23e9",
        },
        {
            "train": "7b652bebffa0372df5a6aec40a7cc6d00252e115f62ad42cdc4f122ceee4098f",
            "prune": "c4f8a1a4335ad7ed01efb7b49f0ac10e1c9309ee9447f3844389ca3fd5b963be",
            "finetune": "f324b59a70d4f297bb63486f13a6b2e417461a275f835fafc416b9b86e8d44c4",
        },
    ),
    "cnn-modifiers": (
        {
            "train": "2b52791602b97de69a52f54e53a031aa23747e9d4ac48d0a0c8a8deedeb82224",
            "prune": "cf000633a12b71284bfb67a316b386307c903cf91b23115c9b8f0129e03d432e",
            "finetune": "0390849384331269d006337c1c45c7d4c25e64b634f3118c7a608a46380d5a56",
        },
        {
            "train": "4ec36d50f5e82590d8b1fc4f9967c15b4cbfe2273d4644411f8b6316d5c249de",
            "prune": "f40ba0b9189de4cc0b65e1a470dcc9b3a82a390d4e0bfa3cd84d2b40db2283ed",
            "finetune": "d09e7bbe473bc61b78a9f6867c1be454daed2f048076e2668f2b4e635c4e5ca8",
        },
    ),
}


def weights_digest(path: Path) -> str:
    """sha256 over a checkpoint's tensors (weights, then masks), by sorted name: each name,
    dtype, shape and raw bytes."""
    checkpoint = safe_load(path)
    digest = hashlib.sha256()
    for part in ("state_dict", "masks"):
        tensors = checkpoint.get(part) or {}
        for name in sorted(tensors):
            tensor = tensors[name].detach().cpu().contiguous()
            digest.update(f"{part}/{name}/{tensor.dtype}/{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def shipped_mnist(mnist_root: Path) -> dict:
    recipe = tomllib.loads((ROOT / "pipelines" / "mnist.toml").read_text())
    recipe["data"].update(root=str(mnist_root), download=False)
    return recipe


def recipe(name: str, mnist_root: Path, folder: Path) -> Path:
    if name == "mnist.toml":
        data = shipped_mnist(mnist_root)
    elif name == "mlp-modifiers":
        data = merge(tiny_pipeline_data(mnist_root), MLP_MODIFIERS)
    else:
        (folder / "cnn.py").write_text(CNN_SOURCE)
        data = merge(tiny_pipeline_data(mnist_root), CNN_MODIFIERS)
    path = folder / "pipeline.toml"
    path.write_text(dump_toml(data))
    return path


@pytest.mark.parametrize("name", sorted(PINNED))
def test_training_stages_write_the_pinned_weights(name, mnist_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    # The ONNX dry run before training loads the exporter (seconds) and changes no weight.
    monkeypatch.setattr(export, "check_exportable", lambda *args: None)
    config = load_pipeline(recipe(name, mnist_root, tmp_path))
    run_dir = tmp_path / "run"
    run_pipeline(config, out_dir=run_dir, progress=False, until="finetune")
    digests = {stage: weights_digest(run_dir / stage / "model.pt") for stage in STAGES}
    assert digests in PINNED[name], f"{name}: the weights changed; now {digests}"
