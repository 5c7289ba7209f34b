"""A data set held in memory: raw samples and labels per split, and how to normalize them.

    data = Dataset("mnist", images, labels, classes, mean=0.1307, std=0.3081)
    x, y = data.tensors("val")                       # normalized float32 inputs, int64 labels
    for x, y in data.batches("train", 64, generator=g): ...

Splits are "train", "val" (a seeded, stratified part held out of the training files:
every choice is made on it) and "test" (only reported). `images` holds the raw samples:
uint8 pixels [N, C, H, W] for images (kind "image"), float32 values [N, F] for tables
(kind "table"), and for arrays (kind "array", any sample shape) a SampleStore
(compress.data.store) that gathers the samples asked for from a memory-mapped file; float32
waveforms [N, clip_samples] in [-1, 1] for sound (kind "audio").
`normalize` turns raw samples into model inputs exactly as the ONNX metadata
`preprocessing` tells a deployer to:

- images: input = (pixel * scale - mean[c]) / std[c], per channel c;
- tables: input = (x - mean[f]) / std[f], per feature f;
- arrays: input = (x - mean) / std, mean and std broadcast against one sample.
- sound: input = the `frontend`'s features (compress.data.features), which every artifact
  holds in its graph: a deployer feeds the waveform itself (`artifact_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from compress.data.augment import AudioAugmentation
from compress.data.store import SampleStore
from compress.files import hash_object

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    name: str
    images: dict[str, torch.Tensor | SampleStore]  # raw samples per split (module docstring)
    labels: dict[str, torch.Tensor]  # int64 class indices per split
    classes: tuple[str, ...]
    # Per channel (images) or per feature (tables); arrays: nested lists (or a number) of a
    # shape that broadcasts against one sample.
    mean: float | tuple[float, ...] | list
    std: float | tuple[float, ...] | list
    files: dict[str, str] = field(default_factory=dict)  # file path -> sha256 (or content key)
    kind: str = "image"  # "image" | "table" | "array" | "audio"
    feature_names: tuple[str, ...] | None = None  # table columns in input order; None for images
    scale: float = 1 / 255  # images: raw pixel -> 0..1
    settings: dict = field(
        default_factory=dict
    )  # source settings that shape the tensors (cache keys)
    frontend: nn.Module | None = None  # sound: waveforms -> features (compress.data.features)
    augmentation: AudioAugmentation | None = None  # sound: time shift and background noise
    normalization: str = "channel"  # arrays: "feature" | "channel" | "none" (compress.data.arrays)

    def __post_init__(self) -> None:
        if self.kind == "array":
            self._mean = torch.tensor(np.asarray(self.mean, np.float32))
            self._std = torch.tensor(np.asarray(self.std, np.float32))
            return
        # channels or features (sound: the front end standardizes, mean 0 and std 1 here)
        width = 1 if self.kind == "audio" else self.images["train"].shape[1]
        self.mean = _per_entry(self.mean, width)
        self.std = _per_entry(self.std, width)
        shape = (1, width, 1, 1) if self.kind == "image" else (1, width)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).reshape(shape)
        self._std = torch.tensor(self.std, dtype=torch.float32).reshape(shape)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample as a model sees it: (C, H, W) for images, (F,) for tables, the arrays'
        sample shape for arrays, the features (1, frames, coefficients) for sound."""
        if self.kind == "audio":
            s = self.frontend.settings
            return (1, s.frames, s.coefficients)
        return tuple(self.images["train"].shape[1:])

    @property
    def artifact_shape(self) -> tuple[int, ...]:
        """One sample as an exported artifact takes it: the raw waveform (clip_samples,) for
        sound, whose artifacts hold the front end; the model's input otherwise."""
        return tuple(self.images["train"].shape[1:]) if self.kind == "audio" else self.input_shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def preprocessing(self) -> dict:
        """The ONNX metadata `preprocessing`: what a deployer does to a raw sample."""
        if self.kind == "array":
            return {
                "normalize": self.normalization,
                "mean": self.mean,
                "std": self.std,
                "input_shape": list(self.input_shape),
                "dtype": "float32",
            }
        if self.kind == "audio":
            s = self.frontend.settings
            return {
                "sample_rate": s.sample_rate,
                "clip_samples": s.clip_samples,
                # 16-bit PCM samples times `scale` (n-bit PCM: / 2^(n-1)); several channels:
                # their mean; shorter clips: zeros at the end, longer: the first clip_samples
                "scale": 1 / 32768,
                "mono": "mean",
                "pad": "end",
                "features": {**s.as_dict(), "in_graph": True},
            }
        if self.kind == "table":
            return {
                "features": list(self.feature_names or ()),
                "mean": list(self.mean),
                "std": list(self.std),
            }
        channels, height, width = self.input_shape
        return {
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "size": [height, width],
            "channels": channels,
            "layout": "NCHW",
        }

    @property
    def fingerprint(self) -> str:
        """Names and content hashes of the files the data came from, and the settings that
        shaped the tensors (part of every cache key)."""
        files = ",".join(sorted(f"{Path(p).name}:{digest}" for p, digest in self.files.items()))
        return files + (f";{hash_object(self.settings)}" if self.settings else "")

    def size(self, split: str) -> int:
        return len(self.labels[split])

    def normalize(self, samples: torch.Tensor) -> torch.Tensor:
        if self.kind == "audio":
            with torch.no_grad():  # the front end is fixed: no graph through it
                return torch.cat([self.frontend(c) for c in samples.float().split(1024)])
        if self.kind in ("table", "array"):
            return (samples.float() - self._mean) / self._std
        return (samples.float() * self.scale - self._mean) / self._std

    def tensors(
        self, split: str, limit: int | None = None, spread: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split (or its first `limit` samples, or with `spread` `limit` samples
        drawn across it: `spread_index`), normalized."""
        index = self._index(split, limit, spread)
        return self.normalize(self.images[split][index]), self.labels[split][index]

    def artifact_inputs(
        self, split: str, limit: int | None = None, spread: bool = False
    ) -> torch.Tensor:
        """What an exported artifact takes for the split (its first `limit` samples, or with
        `spread` samples drawn across it): the waveforms for sound, the normalized inputs
        otherwise."""
        if self.kind != "audio":
            return self.tensors(split, limit, spread)[0]
        return self.images[split][self._index(split, limit, spread)].float()

    def _index(self, split: str, limit: int | None, spread: bool) -> torch.Tensor | slice:
        # A slice, so that a SampleStore gathers the samples (a tensor gives a view).
        return self.spread_index(split, limit) if spread else slice(None, limit)

    def spread_index(self, split: str, count: int | None) -> torch.Tensor | slice:
        """`count` positions drawn across the split, in order, the same in every run (a
        permutation seeded with 0): what statistics of a split are measured on. Folders of
        images or sounds list their files class by class, so the first 1,024 samples of a
        10-class folder of 500 per class hold two and a half classes; measured on those,
        mobilenet_v3_small's BatchNorm statistics took its validation accuracy from 84.6% to
        65.4%."""
        size = len(self.labels[split])
        if count is None or count >= size:
            return slice(None)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(0))
        return order[:count].sort().values

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalized batches cut by index from the split (gathered from the file for arrays)."""
        x, y = self.images[split], self.labels[split]
        for index in self.index_batches(split, batch_size, generator, shuffle):
            yield self.normalize(x[index]), y[index]

    def index_batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
    ) -> Iterator[torch.Tensor]:
        """The sample indices of each batch (shuffled with `generator`)."""
        n = self.size(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def _per_entry(value: float | tuple[float, ...] | list[float], width: int) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),) * width
    values = tuple(float(v) for v in value)
    if len(values) != width:
        raise ValueError(f"{len(values)} mean/std values for {width} channels or features")
    return values


def channel_stats(
    images: torch.Tensor, scale: float = 1 / 255
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] after `* scale` (a std of 0,
    a constant channel, becomes 1 so that normalizing never divides by zero)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), 4096):  # in chunks: a float copy of all of CIFAR is 1 GB
        x = images[start : start + 4096].transpose(0, 1).reshape(channels, -1).float()
        total += x.sum(1, dtype=torch.float64)
        squares += x.square_().sum(1, dtype=torch.float64)
    count = max(1, images[:, 0].numel())
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    mean, std = mean * scale, std * scale
    return tuple(mean.tolist()), tuple(torch.where(std > 0, std, torch.ones_like(std)).tolist())
