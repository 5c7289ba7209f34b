"""Pruning: threshold and magnitude (per layer, global, overrides), the cubic schedule, the
gradual pruner, and pruned weights staying exactly zero through fine-tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from compress.config import GradualConfig, OptimConfig, PruneConfig
from compress.errors import CompressError
from compress.pruning import (
    GradualPruner,
    apply_masks,
    check_layer_names,
    cubic_sparsity,
    make_permanent,
    masks_of,
    prunable_layers,
    prune_oneshot,
    sparsity_summary,
)
from compress.registry import build_model
from compress.training import fit


def mlp(seed: int = 0, hidden: int = 16) -> nn.Module:
    """simplenet: layers net.1 [hidden, 784] and net.3 [10, hidden]."""
    torch.manual_seed(seed)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": hidden})


def zeros(module: nn.Module) -> int:
    return int((module.weight == 0).sum())


def test_prunable_layers_are_the_linear_and_conv_layers():
    assert list(prunable_layers(mlp())) == ["net.1", "net.3"]
    lenet = build_model("lenet5")
    assert list(prunable_layers(lenet)) == [
        "features.0",
        "features.2",
        "classifier.1",
        "classifier.3",
    ]


def test_threshold_pruning_removes_exactly_the_weights_at_or_below_the_threshold():
    model = mlp()
    layer = model.net[3]
    with torch.no_grad():  # put weights exactly on the threshold, both signs
        layer.weight[0, :4] = torch.tensor([0.05, -0.05, 0.0500001, -0.0499999])
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    masks = prune_oneshot(model, PruneConfig(method="threshold", threshold=0.05))
    for name, weight in before.items():
        assert torch.equal(masks[name], weight.abs() > 0.05)
        module = dict(model.named_modules())[name]
        assert torch.all(module.weight[weight.abs() <= 0.05] == 0)
        assert torch.equal(module.weight[weight.abs() > 0.05], weight[weight.abs() > 0.05])
    assert masks["net.3"][0, :4].tolist() == [False, False, True, False]


def test_threshold_overrides_apply_per_layer():
    model = mlp()
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    config = PruneConfig(
        method="threshold", threshold=0.01, overrides={"net.3": {"threshold": 0.2}}
    )
    masks = prune_oneshot(model, config)
    assert torch.equal(masks["net.1"], before["net.1"].abs() > 0.01)
    assert torch.equal(masks["net.3"], before["net.3"].abs() > 0.2)


@pytest.mark.parametrize("amount", [0.3, 0.75])
def test_magnitude_pruning_per_layer_removes_the_amount_of_each_layer(amount):
    model = mlp()
    before = {n: m.weight.detach().abs().clone() for n, m in prunable_layers(model).items()}
    prune_oneshot(model, PruneConfig(method="magnitude", amount=amount, scope="layer"))
    for name, module in prunable_layers(model).items():
        n = module.weight.numel()
        assert zeros(module) == round(amount * n)
        removed = before[name][module.weight_mask == 0]
        kept = before[name][module.weight_mask == 1]
        assert removed.max() <= kept.min()  # the smallest magnitudes go


def test_magnitude_pruning_global_ranks_over_all_layers():
    model = mlp()
    layers = prunable_layers(model)
    before = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.6, scope="global"))
    mask = torch.cat([m.weight_mask.flatten() for m in layers.values()])
    assert int((mask == 0).sum()) == round(0.6 * before.numel())
    assert before[mask == 0].max() <= before[mask == 1].min()
    # Global ranking prunes the layers unevenly (the 784-wide layer has smaller weights).
    assert (
        abs(layers["net.1"].weight_mask.mean().item() - layers["net.3"].weight_mask.mean().item())
        > 0.01
    )


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_overrides_give_a_layer_its_own_amount(scope):
    model = mlp()
    config = PruneConfig(
        method="magnitude", amount=0.5, scope=scope, overrides={"net.3": {"amount": 0.2}}
    )
    prune_oneshot(model, config)
    layers = prunable_layers(model)
    assert zeros(layers["net.3"]) == round(0.2 * 160)
    assert zeros(layers["net.1"]) == round(0.5 * 16 * 784)


def test_only_the_listed_layers_are_pruned():
    model = mlp()
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.5, layers=["net.1"]))
    assert set(masks_of(model)) == {"net.1"}
    assert zeros(model.net[3]) == 0


def test_unknown_layer_names_are_refused_with_the_model_s_layers():
    with pytest.raises(CompressError, match="its layers are: net.1, net.3"):
        check_layer_names(mlp(), PruneConfig(layers=["fc1"]))
    with pytest.raises(CompressError, match="prune.overrides names \\['fc9'\\]"):
        check_layer_names(mlp(), PruneConfig(overrides={"fc9": {"threshold": 0.1}}))


def test_make_permanent_bakes_the_zeros_in_as_positive_zeros():
    model = mlp()
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.5, scope="layer"))
    masks = masks_of(model)
    with torch.no_grad():  # negative originals under the mask: 0 * negative = -0.0
        model.net[1].weight_orig.copy_(-model.net[1].weight_orig.abs())
        model(torch.zeros(1, 1, 28, 28))  # the pruning hook recomputes weight = orig * mask
    assert torch.signbit(model.net[1].weight[~masks["net.1"]]).all()
    make_permanent(model)
    assert not any(tprune.is_pruned(m) for m in model.modules())
    assert "net.1.weight_orig" not in dict(model.named_parameters())
    weight = model.net[1].weight.detach()
    assert torch.all(weight[~masks["net.1"]] == 0)
    assert not torch.signbit(weight[weight == 0]).any()


def test_sparsity_summary_counts_zero_weights():
    model = mlp()
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.25, scope="layer"))
    summary = sparsity_summary(model)
    expected = round(0.25 * 16 * 784) + round(0.25 * 160)
    assert summary["zero_weights"] == expected
    assert summary["sparsity"] == pytest.approx(expected / (16 * 784 + 160), abs=1e-6)
    assert summary["layers"]["net.3"] == {"params": 160, "zeros": 40, "sparsity": 0.25}


def test_cubic_sparsity_runs_from_the_initial_to_the_final_amount():
    assert cubic_sparsity(0, 10, 0.1, 0.9) == pytest.approx(0.1)
    assert cubic_sparsity(10, 10, 0.1, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(25, 10, 0.1, 0.9) == pytest.approx(0.9)  # held after the ramp
    assert cubic_sparsity(5, 10, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.5**3)
    values = [cubic_sparsity(k, 10, 0.0, 0.8) for k in range(11)]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(s > 0 for s in steps)
    assert all(b < a for a, b in zip(steps, steps[1:], strict=False))  # fast first, then slower


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_gradual_pruner_reaches_the_target_and_never_revives_a_weight(scope):
    model = mlp()
    gradual = GradualConfig(epochs=1, steps=4, ramp=0.5, initial_amount=0.1)
    config = PruneConfig(
        method="magnitude", schedule="gradual", amount=0.8, scope=scope, gradual=gradual
    )
    pruner = GradualPruner(model, config)
    total_steps, previous, sparsities = 40, None, []
    for step in range(1, total_steps + 1):
        with torch.no_grad():  # stand-in for training: move every weight a little
            for module in prunable_layers(model).values():
                module.weight_orig.add_(torch.randn_like(module.weight_orig) * 0.01)
        pruner(step, total_steps)
        masks = masks_of(model)
        if previous is not None:
            for name, mask in masks.items():
                assert not torch.any(mask & ~previous[name])  # pruned stays pruned
        previous = masks
        sparsities.append(sparsity_summary(model)["sparsity"])
    assert sparsities[total_steps // 2 - 1] == pytest.approx(
        0.8, abs=1e-3
    )  # at the end of the ramp
    assert sparsities[-1] == pytest.approx(0.8, abs=1e-3)
    assert sparsities[0] < 0.8
    if scope == "layer":
        for module in prunable_layers(model).values():
            assert zeros(module) == round(0.8 * module.weight.numel())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gradual_pruning_in_the_training_loop_reaches_the_target_sparsity(
    tiny_data, fit_settings, scope
):
    model = mlp()
    gradual = GradualConfig(epochs=1, lr=0.05, steps=5, ramp=0.5)
    config = PruneConfig(
        method="magnitude", schedule="gradual", amount=0.7, scope=scope, gradual=gradual
    )
    pruner = GradualPruner(model, config)
    result = fit(model, tiny_data, config.gradual, fit_settings(), desc="prune", modifiers=[pruner])
    assert sparsity_summary(model)["sparsity"] == pytest.approx(0.7, abs=1e-3)
    if scope == "layer":
        for module in prunable_layers(model).values():
            assert zeros(module) == round(0.7 * module.weight.numel())
    assert result.final["test_accuracy"] > 0.5


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_pruned_weights_stay_zero_through_finetuning(tiny_data, fit_settings, optimizer):
    model = mlp()
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.7, scope="global"))
    masks = masks_of(model)
    make_permanent(model)
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}

    # What the finetune stage does: re-attach the masks, train (with momentum and weight
    # decay, which move a plain zero), make the pruning permanent again.
    apply_masks(model, masks)
    config = OptimConfig(
        epochs=1,
        optimizer=optimizer,
        lr=0.05,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        weight_decay=0.01,
    )
    fit(model, tiny_data, config, fit_settings(), desc="finetune")
    make_permanent(model)

    for name, module in prunable_layers(model).items():
        weight = module.weight.detach()
        assert torch.all(weight[~masks[name]] == 0)
        assert not torch.signbit(weight[~masks[name]]).any()
        assert not torch.equal(
            weight[masks[name]], before[name][masks[name]]
        )  # training did happen
        assert torch.all(weight[masks[name]] != 0)


def test_a_convolutional_model_is_pruned_in_every_conv_and_linear_layer():
    torch.manual_seed(0)
    model = build_model("lenet5")
    prune_oneshot(model, PruneConfig(method="magnitude", amount=0.5, scope="layer"))
    masks = masks_of(model)
    assert masks["features.0"].dim() == 4 and masks["classifier.1"].dim() == 2
    for name, stats in sparsity_summary(model)["layers"].items():
        assert stats["sparsity"] == pytest.approx(0.5, abs=1e-3), name
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    make_permanent(model)
    for name, module in prunable_layers(model).items():
        assert torch.all(module.weight[~masks[name]] == 0)
