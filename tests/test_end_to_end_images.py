"""End to end on an RGB image folder with a user's own CNN (BatchNorm, a residual block,
depthwise-separable convs): the run gives the verified table, and every artifact's accuracy
in report.json equals an independent onnxruntime evaluation that uses only the file, its
metadata and the image files (decoded with Pillow, resized and normalized as the metadata says)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from data_files import image_array, write_image
from PIL import Image

from compress.cli import main

USER_CNN = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    """conv-BN stem, a residual block, a depthwise-separable pair, global pooling, Linear."""

    def __init__(self, num_classes, input_shape):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.res = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.pointwise = nn.Sequential(
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.pointwise(self.depthwise(x))
        return self.fc(x.mean((2, 3)))
'''

CLASSES = {"apple": 0, "berry": 1, "cherry": 2}


def write_rgb_folder(root: Path, per_class: dict[str, int]) -> None:
    """40x40 RGB PNGs (resized to 32x32 by the run): brightness and a colour cast by class."""
    for split, count in per_class.items():
        for name, label in CLASSES.items():
            for i in range(count):
                array = image_array(
                    zlib.crc32(f"{split}/{name}/{i}".encode()), (40, 40), 3, label
                ).astype(np.int16)
                array[..., label] += 40  # each class leans to one channel
                write_image(
                    root / split / name / f"{i:03d}.png", np.clip(array, 0, 255).astype(np.uint8)
                )


def independent_accuracy(path: Path, root: Path) -> float:
    """Accuracy of one ONNX file on root/test/<class>/*.png from the file and its metadata only."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    pre = json.loads(meta["preprocessing"])
    labels = json.loads(meta["labels"])
    used = json.loads(meta["inputs"]) if "inputs" in meta else None
    h, w = pre["size"]
    mean = np.asarray(pre["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(-1, 1, 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for file in sorted((root / "test").glob("*/*.png")):
        with Image.open(file) as image:
            image = image.convert("RGB" if pre["channels"] == 3 else "L")
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, np.uint8)
        pixels = pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None]
        x = ((pixels.astype(np.float32) * np.float32(pre["scale"]) - mean) / std).astype(
            np.float32
        )[None]
        if used is not None:  # a file on the used inputs only: channels, or flattened elements
            idx = np.asarray(used["indices"])
            x = x[:, idx] if used["axis"] == "channels" else x.reshape(1, -1)[:, idx]
        logits = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
        correct += labels[int(logits.argmax(1)[0])] == file.parent.name
        total += 1
    return correct / total


@pytest.mark.slow
def test_a_user_cnn_on_an_rgb_image_folder_is_verified_independently(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "fruit"
    write_rgb_folder(root, {"train": 24, "test": 8})
    (tmp_path / "net.py").write_text(USER_CNN)
    (tmp_path / "fruit.toml").write_text(f'''
[data]
name = "imagefolder"
root = "{root}"
image_size = [32, 32]
channels = 3
validation = 0.15
batch_size = 16

[model]
path = "net.py"
class = "Net"

[train]
epochs = 4
optimizer = "adam"
lr = 0.01

[prune]
method = "magnitude"
amount = 0.5
scope = "global"

[finetune]
epochs = 1
lr = 0.001

[quantize]
variants = ["dynamic", "static"]
calibration_samples = 32

[verify]
repetitions = 10
throughput_batch = 64
''')
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "fruit.toml"), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    assert names == ["dense", "pruned", "pruned-int8-dynamic", "pruned-int8-static"]
    assert all(a["status"] == "ok" for a in report["artifacts"])
    assert report["dataset"]["test_samples"] == 24
    dense = report["artifacts"][0]
    assert dense["accuracy"] > 0.5  # learned something (chance: 1/3)
    for artifact in report["artifacts"]:
        assert independent_accuracy(out / artifact["path"], root) == artifact["accuracy"], artifact[
            "name"
        ]
    prune = json.loads((out / "prune" / "stage.json").read_text())["metrics"]
    assert prune["batchnorm_recalibration_samples"] > 0 and prune["warnings"] == []
    assert report["inputs"]["unit"] == "channels" and report["inputs"]["total"] == 3
