"""Pruning methods by name: every registered method gets the same checks, and a new method
is one module (here, the `RandomPruning` class below) plus one registry line."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from compress.analysis.tune import default_param, point_overrides
from compress.cli import main
from compress.config import Fraction, GradualConfig, PruneConfig, parse_pipeline
from compress.errors import CompressError, ConfigError
from compress.pruning import (
    GradualPruner,
    PruningMethod,
    get_method,
    keep_largest,
    list_methods,
    masks_of,
    prunable_layers,
    prune_oneshot,
    register_pruning_method,
    registry,
    sparsity_summary,
)
from compress.registry import build_model


# --- a new method: this class, and one registry line (in the fixture below)
class RandomConfig(PruneConfig):
    method: Literal["random"] = "random"
    amount: Fraction = 0.5
    seed: int = 0


class RandomPruning(PruningMethod):
    """Remove a random `amount` of each layer's weights (a baseline for the real methods)."""

    name = "random"
    Config = RandomConfig
    strength = "amount"
    fraction = True
    tune_range = (0.1, 0.9)

    def masks(
        self, layers: dict[str, nn.Module], settings: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.config.seed)
        masks = {}
        for name, module in layers.items():
            keep = (
                module.weight_mask.bool()
                if hasattr(module, "weight_mask")
                else torch.ones_like(module.weight, dtype=torch.bool)
            )
            scores = torch.rand(keep.shape, generator=generator)
            target = int(round(settings[name] * keep.numel()))
            masks[name] = keep_largest(scores, keep, target - int((~keep).sum()))
        return masks


@pytest.fixture
def random_method(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(list_methods()))  # undone after the test
    register_pruning_method(RandomPruning)  # the one registry line
    return RandomPruning


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16})


def test_the_builtin_methods_are_registered():
    names = list(list_methods())
    assert {"magnitude", "threshold", "channels"} <= set(names) and names == sorted(names)


def test_an_unknown_method_lists_the_known_ones():
    with pytest.raises(
        CompressError,
        match=r"unknown pruning method 'magnitud' \(did you mean 'magnitude'\?\); "
        r"known: .*magnitude, .*threshold",
    ):
        get_method("magnitud")


@pytest.mark.parametrize("name", list(list_methods()))
def test_every_method_declares_a_section_keyed_by_its_name(name):
    method = get_method(name)
    assert method.Config.model_fields["method"].default == name
    assert method.strength in method.Config.model_fields
    low, high = method.tune_range
    assert 0 < low < high
    config = parse_pipeline({"prune": {"method": name}}, name="p").prune
    assert type(config) is method.Config and PruneConfig(method=name) == config


# Methods that learn their masks by training are checked with their training
# (tests/test_variational.py).
@pytest.mark.parametrize("name", [n for n, m in list_methods().items() if not m.trains])
def test_every_method_removes_more_weights_as_its_strength_grows(name):
    method = get_method(name)
    low, high = method.tune_range
    sparsity = []
    for value in (low, high):
        model = mlp()
        example = torch.randn(4, 1, 28, 28)  # structured methods trace the model with it
        masks = prune_oneshot(model, PruneConfig(method=name, **{method.strength: value}), example)
        assert set(masks) == set(prunable_layers(model))
        for layer, mask in masks.items():  # masks are bool keep-masks that the model applies
            weight = dict(model.named_modules())[layer].weight
            assert mask.dtype == torch.bool and mask.shape == weight.shape
            assert torch.all(weight[~mask] == 0)
        sparsity.append(sparsity_summary(model)["sparsity"])
    assert sparsity[0] < sparsity[1]


def test_registering_a_name_twice_is_refused(random_method):
    class Other(RandomPruning):
        pass

    with pytest.raises(ValueError, match="'random' is registered twice"):
        register_pruning_method(Other)


def test_a_method_whose_section_has_another_name_is_refused(random_method):
    class Mislabelled(RandomPruning):
        name = "mislabelled"

    with pytest.raises(ValueError, match="its Config needs method"):
        register_pruning_method(Mislabelled)


def test_a_new_method_is_usable_from_a_pipeline_once_registered(random_method):
    config = parse_pipeline({"prune": {"method": "random", "amount": 0.6, "seed": 3}}, name="p")
    assert isinstance(config.prune, RandomConfig) and config.prune.seed == 3
    model = mlp()
    prune_oneshot(model, config.prune)
    for stats in sparsity_summary(model)["layers"].values():
        assert stats["sparsity"] == pytest.approx(0.6, abs=1e-3)
    # its settings are checked like any section's, and tune searches its strength
    with pytest.raises(ConfigError, match="prune.seeds: unknown key; did you mean 'prune.seed'"):
        parse_pipeline({"prune": {"method": "random", "seeds": 3}}, name="p")
    assert default_param(config) == "prune.amount"


def test_a_new_method_with_a_fraction_prunes_gradually_and_with_overrides(random_method):
    config = PruneConfig(
        method="random",
        amount=0.8,
        schedule="gradual",
        gradual=GradualConfig(steps=4, ramp=1.0),
        overrides={"net.3": {"amount": 0.4}},
    )
    model = mlp()
    pruner = GradualPruner(model, config)
    seen = []
    for step in range(0, 9):
        pruner(step, 8)
        seen.append(sparsity_summary(model)["layers"]["net.1"]["sparsity"])
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8, abs=1e-3)
    assert sparsity_summary(model)["layers"]["net.3"]["sparsity"] == pytest.approx(0.4, abs=1e-2)
    kept = masks_of(model)
    pruner(8, 8)  # at the target already: nothing more is removed
    assert all(torch.equal(kept[n], m) for n, m in masks_of(model).items())
    # tune scales the override by density with the searched amount
    pipeline = parse_pipeline({"prune": config.model_dump()}, name="p")
    assert point_overrides(pipeline, "prune.amount", 0.8)["prune.overrides"]["net.3"][
        "amount"
    ] == pytest.approx(0.4)


def test_gradual_pruning_is_refused_for_a_method_without_a_fraction():
    with pytest.raises(ConfigError, match="schedule = 'gradual' needs method = .*'magnitude'"):
        parse_pipeline({"prune": {"method": "threshold", "schedule": "gradual"}}, name="p")


def test_compress_methods_lists_every_method(random_method):
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names == sorted(list_methods()) and "random" in names
    assert "prunes more as amount grows" in result.output
