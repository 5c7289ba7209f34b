"""Training-time augmentation: random translation of image batches; time shift and
background noise for waveforms.

    x = random_shift(images[index], pixels=2, generator=g)   # (N, C, H, W), before normalize
    x = augment_audio(waves[index], data.augmentation, g)    # (N, T), before the front end

Each image moves by its own whole-pixel offset (dy, dx), each drawn uniformly from
[-pixels, pixels]; what moves in from the border is 0 (a black pixel, before normalization).
MNIST digits sit centred in a 20x20 box of their 28x28 image, so shifts of 1-2 pixels keep
the whole digit; a model trained on them is less tied to the exact position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """`images` (N, C, H, W), each translated by up to `pixels` in each direction."""
    if pixels == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


@dataclass
class AudioAugmentation:
    """Waveform augmentation, as in the Speech Commands training scripts: each clip moved by
    a random whole-sample offset in [-shift, shift] (zeros fill in), then, with probability
    `noise_probability`, a random stretch of a random background clip added at a volume
    drawn uniformly from [0, noise_volume], the sum clipped to [-1, 1]."""

    shift: int = 0  # samples
    noise: list[torch.Tensor] | None = None  # background clips, float32 [n], each >= T long
    noise_volume: float = 0.0
    noise_probability: float = 0.0

    @property
    def active(self) -> bool:
        return self.shift > 0 or bool(self.noise and self.noise_volume and self.noise_probability)


def time_shift(waves: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """`waves` (N, T), each moved by up to `samples` either way; zeros move in."""
    if samples == 0:
        return waves
    n, t = waves.shape
    padded = F.pad(waves, (samples, samples))
    offset = torch.randint(0, 2 * samples + 1, (n,), generator=generator)
    return padded.gather(1, offset[:, None] + torch.arange(t))


def add_noise(
    waves: torch.Tensor, aug: AudioAugmentation, generator: torch.Generator
) -> torch.Tensor:
    """`waves` (N, T) with background noise mixed in (see AudioAugmentation)."""
    n, t = waves.shape
    which = torch.randint(0, len(aug.noise), (n,), generator=generator).tolist()
    starts = torch.rand(n, generator=generator)
    volume = torch.rand(n, generator=generator) * aug.noise_volume
    mixed = torch.rand(n, generator=generator) < aug.noise_probability
    noise = torch.zeros_like(waves)
    for i in torch.nonzero(mixed).flatten().tolist():
        clip = aug.noise[which[i]]
        start = int(starts[i] * (len(clip) - t + 1))
        noise[i] = clip[start : start + t] * volume[i]
    return (waves + noise).clamp_(-1.0, 1.0)


def augment_audio(
    waves: torch.Tensor, aug: AudioAugmentation | None, generator: torch.Generator
) -> torch.Tensor:
    """Time shift, then background noise, as `aug` says (None or inactive: unchanged)."""
    if aug is None or not aug.active:
        return waves
    waves = time_shift(waves, aug.shift, generator)
    if aug.noise and aug.noise_volume and aug.noise_probability:
        waves = add_noise(waves, aug, generator)
    return waves
