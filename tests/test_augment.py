"""Random shifts of training images ([data] shift): what moves, by how much, and where."""

from __future__ import annotations

import pytest
import torch

from compress.config import DistillConfig, OptimConfig, load_pipeline
from compress.data.augment import random_shift
from compress.errors import ConfigError
from compress.registry import build_model
from compress.training import fit, modifiers_for, predict


def digit_images(n: int = 64) -> torch.Tensor:
    """(n, 1, 12, 12) uint8 images, each a distinct pattern inside a 4-pixel border of zeros."""
    generator = torch.Generator().manual_seed(1)
    images = torch.zeros(n, 1, 12, 12, dtype=torch.uint8)
    images[:, :, 4:8, 4:8] = torch.randint(
        1, 256, (n, 1, 4, 4), generator=generator, dtype=torch.uint8
    )
    return images


def offset(original: torch.Tensor, moved: torch.Tensor, pixels: int) -> tuple[int, int] | None:
    """The (dy, dx) that turns `original` into `moved`, if a translation does."""
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            if torch.equal(torch.roll(original, (dy, dx), dims=(-2, -1)), moved):
                return dy, dx
    return None


def test_each_image_is_translated_by_at_most_the_given_pixels_and_loses_nothing():
    images = digit_images()
    moved = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == images.dtype
    offsets = [offset(a, b, 2) for a, b in zip(images, moved, strict=True)]
    assert None not in offsets
    # Offsets are drawn per image, over the whole range (25 possible).
    assert len(set(offsets)) > 12
    assert {dy for dy, _ in offsets} == {-2, -1, 0, 1, 2}


def test_what_moves_in_from_the_border_is_black():
    images = torch.full((8, 1, 6, 6), 200, dtype=torch.uint8)
    moved = random_shift(images, 1, torch.Generator().manual_seed(0))
    for image in moved[:, 0]:
        zeros = image == 0
        # A shifted image of a full frame is 200 inside, 0 in the rows and columns it left behind.
        assert zeros.sum() in (0, 6, 11)
        assert torch.all(image[~zeros] == 200)


def test_the_same_generator_seed_gives_the_same_shifts_and_zero_pixels_none():
    images = digit_images()
    first = random_shift(images, 1, torch.Generator().manual_seed(5))
    again = random_shift(images, 1, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert random_shift(images, 0, torch.Generator()) is images


def test_shift_is_an_image_setting_that_tables_refuse(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[data]\nname = "mnist"\nshift = 2\n[model]\nname = "lenet300"\n')
    assert load_pipeline(path).data.shift == 2
    path.write_text(
        '[data]\nname = "csv"\ntrain = "t.csv"\ntest_fraction = 0.2\nlabel = "y"\nshift = 2\n'
        '[model]\nname = "logreg"\n'
    )
    with pytest.raises(ConfigError, match="shift"):
        load_pipeline(path)


def test_with_shifted_images_distillation_asks_the_teacher_about_each_shifted_batch(
    tiny_data, fit_settings
):
    # The teacher relabels digits (d -> 9 - d) from the image itself, so only a teacher run
    # on the shifted batch can be followed; the student learns the relabelling from it.
    torch.manual_seed(0)
    teacher = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 32})
    images, labels = tiny_data.tensors("train")
    fit(teacher, tiny_data, OptimConfig(epochs=3, lr=0.1), fit_settings(), desc="train")
    relabel = torch.nn.Sequential(teacher, torch.nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        relabel[1].weight.copy_(torch.eye(10).flip(0) * 4)  # logit of d goes to 9 - d
    student = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 32})
    config = OptimConfig(epochs=3, lr=0.1, distill=DistillConfig(alpha=1.0, temperature=2.0))
    modifiers = modifiers_for(config, "finetune", teacher=relabel)
    fit(student, tiny_data, config, fit_settings(shift=2), desc="finetune", modifiers=modifiers)
    predicted = predict(student.eval(), images).argmax(1)
    assert (predicted == 9 - labels).float().mean() > 0.6


@pytest.mark.parametrize("shift", [0, 2])
def test_fit_trains_on_shifted_images_only_when_asked(tiny_data, fit_settings, shift):
    seen = []
    model = build_model("simplenet", kwargs={"num_classes": 10, "hidden": 8})
    model.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()) if module.training else None
    )
    fit(model, tiny_data, OptimConfig(epochs=1, lr=0.01), fit_settings(shift=shift), desc="train")
    originals = {tuple(row.flatten().tolist()) for row in tiny_data.tensors("train")[0][:2000]}
    first_batch = seen[0]
    unchanged = sum(tuple(row.flatten().tolist()) in originals for row in first_batch)
    # Unshifted: every image is one of the training set's; shifted: most have moved (1 in 25 stays).
    assert unchanged == len(first_batch) if shift == 0 else unchanged < len(first_batch) // 2
