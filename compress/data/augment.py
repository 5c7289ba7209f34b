"""Training-time augmentation: random translation of image batches.

    x = random_shift(images[index], pixels=2, generator=g)   # (N, C, H, W), before normalize

Each image moves by its own whole-pixel offset (dy, dx), each drawn uniformly from
[-pixels, pixels]; what moves in from the border is 0 (a black pixel, before normalization).
MNIST digits sit centred in a 20x20 box of their 28x28 image, so shifts of 1-2 pixels keep
the whole digit; a model trained on them is less tied to the exact position.
"""

from __future__ import annotations

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
