"""Models by name, and user models from a file: every one maps [N, 1, 28, 28] to logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.registry import build_model, describe, get_factory, list_models, register_model

USER_MODEL = """
import torch.nn as nn


class TinyNet(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes)
        )

    def forward(self, x):
        return self.net(x)


class Other(nn.Module):
    pass


NOT_A_MODULE = 3
"""


def test_the_builtin_models_are_registered():
    assert {"simplenet", "lenet300", "lenet5"} <= set(list_models())


# The input every model is tried on: an MNIST-sized image, or for a model of sequences
# [T, F] the same 784 values as 28 steps of 28 signals.
SEQUENCE_MODELS = {"cnn1d"}


def sample_shape(name: str) -> tuple[int, ...]:
    return (28, 28) if name in SEQUENCE_MODELS else (1, 28, 28)


@pytest.mark.parametrize("name", list(list_models()))
def test_every_registered_model_maps_images_to_ten_logits(name):
    torch.manual_seed(0)
    shape = sample_shape(name)
    model = build_model(name, kwargs={"num_classes": 10}, input_shape=shape).eval()
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(list_models()))
def test_every_registered_model_takes_num_classes(name):
    shape = sample_shape(name)
    model = build_model(name, kwargs={"num_classes": 7}, input_shape=shape).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", list(list_models()))
def test_every_registered_model_has_a_one_line_description(name):
    assert describe(get_factory(name)).strip()


def test_model_kwargs_reach_the_factory():
    model = build_model("simplenet", kwargs={"hidden": 16})
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 784), (10, 16)]


def test_an_unknown_model_name_lists_the_known_ones():
    with pytest.raises(CompressError) as info:
        build_model("simplnet")
    message = str(info.value)
    assert "unknown model 'simplnet'" in message
    assert "did you mean 'simplenet'?" in message
    assert f"known: {', '.join(list_models())}" in message


def test_unexpected_model_arguments_are_a_clear_error():
    with pytest.raises(CompressError, match="model 'simplenet' does not accept arguments"):
        build_model("simplenet", kwargs={"depth": 3})


def test_a_name_cannot_be_registered_twice():
    list_models()

    def simplenet(num_classes: int = 10) -> nn.Module:
        return nn.Linear(784, num_classes)

    with pytest.raises(ValueError, match="registered twice"):
        register_model(simplenet)
    assert list_models()["simplenet"] is not simplenet


def test_a_user_model_is_built_from_its_file_and_class(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    model = build_model(path=path, class_name="TinyNet", kwargs={"num_classes": 10, "width": 5})
    assert type(model).__name__ == "TinyNet"
    assert model.net[1].out_features == 5
    with torch.no_grad():
        assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_a_missing_user_class_lists_the_classes_in_the_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    with pytest.raises(CompressError) as info:
        build_model(path=path, class_name="TinyNt")
    message = str(info.value)
    assert "did you mean 'TinyNet'?" in message
    assert "known: TinyNet, Other" in message


def test_a_user_name_that_is_not_a_module_class_is_refused(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    with pytest.raises(CompressError, match="NOT_A_MODULE"):
        build_model(path=path, class_name="NOT_A_MODULE")


def test_a_missing_user_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        build_model(path=tmp_path / "absent.py", class_name="Net")
