"""Sparse variational dropout: the KL term, the noise hook, and masks learned on tiny data."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from compress.config import OptimConfig, PruneConfig, parse_pipeline
from compress.errors import CompressError, ConfigError
from compress.pruning import get_method, make_permanent, masks_of, prune_oneshot
from compress.pruning.variational import (
    PARAM,
    VariationalConfig,
    VariationalDropout,
    VariationalTraining,
    _standard_normal_like,
    kl_divergence,
    log_alpha,
)
from compress.registry import build_model
from compress.training import evaluate, fit


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16})


def test_the_kl_term_falls_as_the_noise_grows_and_vanishes_for_pure_noise():
    values = (
        kl_divergence(torch.tensor([-8.0])),
        kl_divergence(torch.tensor([0.0])),
        kl_divergence(torch.tensor([8.0])),
    )
    assert values[0] > values[1] > values[2] >= 0
    assert values[2].item() == pytest.approx(0.0, abs=1e-3)


def test_log_alpha_is_the_noise_to_signal_ratio_clipped():
    w = torch.tensor([1.0, 0.1, 1e-6])
    la = log_alpha(w, torch.log(torch.tensor([0.01, 0.01, 1.0])))
    torch.testing.assert_close(la[:2], torch.tensor([-4.6052, 0.0]), atol=1e-3, rtol=0)
    assert la[2].item() == 8.0


def test_the_hook_adds_noise_in_training_and_masks_in_evaluation():
    model = tiny_model()
    config = VariationalConfig(variational=VariationalTraining(init_log_sigma2=-4.0))
    sparsifier = VariationalDropout(model, config, train_size=100)
    x = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # noisy
    layer = model.net[1]
    with torch.no_grad():
        getattr(layer, PARAM).fill_(-20.0)
        getattr(layer, PARAM)[:8] = 10.0  # these 8 hidden units' weights are all noise
    model.eval()
    plain = nn.functional.linear(
        x.flatten(1), layer.weight * (torch.arange(16) >= 8)[:, None], layer.bias
    )
    hidden = layer(x.flatten(1))
    torch.testing.assert_close(hidden, plain)
    assert sparsifier.kl_loss(0, 10).item() == 0.0  # the KL weight starts at 0 ...
    assert sparsifier.kl_loss(10, 10).item() > 0  # ... and ramps up


def test_the_kl_term_reuses_the_step_s_log_alpha_and_matches_a_fresh_one():
    model = tiny_model()
    sparsifier = VariationalDropout(model, VariationalConfig(), train_size=100)
    fresh = sparsifier.kl()  # no forward pass yet: computed from the parameters
    model.train()
    model(torch.randn(4, 1, 28, 28))
    reused = sparsifier.kl()
    torch.testing.assert_close(reused, fresh)
    assert reused.requires_grad
    with torch.no_grad():
        for layer in sparsifier.layers.values():
            getattr(layer, PARAM).add_(1.0)
    assert sparsifier.kl() < fresh  # used once: the next call sees the noisier parameters


def test_the_noise_is_drawn_standard_normal_in_the_output_s_own_layout():
    torch.manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        output = torch.empty(64, 8, 12, 12).contiguous(memory_format=layout)
        noise = _standard_normal_like(output)
        assert noise.shape == output.shape and noise.stride() == output.stride()
        assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02


def test_overrides_give_a_layer_its_own_kl_weight():
    config = parse_pipeline(
        {
            "prune": {
                "method": "variational",
                "kl_weight": 2.0,
                "overrides": {"net.3": {"kl_weight": 0.5}},
            }
        },
        "x",
    ).prune
    model = tiny_model()
    sparsifier = get_method("variational")(config).sparsifier(model, train_size=100)
    assert sparsifier.kl_weights == {"net.1": 2.0, "net.3": 0.5}
    per_layer = {
        n: kl_divergence(log_alpha(m.weight, getattr(m, PARAM)))
        for n, m in sparsifier.layers.items()
    }
    torch.testing.assert_close(sparsifier.kl(), 2.0 * per_layer["net.1"] + 0.5 * per_layer["net.3"])
    torch.testing.assert_close(sparsifier.kl_loss(10, 10), sparsifier.kl() / 100)


def test_training_learns_masks_that_go_through_torch_prune(tiny_data, fit_settings):
    model = tiny_model()
    fit(model, tiny_data, OptimConfig(epochs=1, lr=0.1), fit_settings(), desc="train")
    config = PruneConfig(
        method="variational", variational=VariationalTraining(epochs=3, lr=3e-3, kl_ramp=0.3)
    )
    with pytest.raises(CompressError, match="needs its training first"):
        prune_oneshot(model, config)
    sparsifier = get_method("variational")(config).sparsifier(model, tiny_data.size("train"))
    assert any(n.endswith(PARAM) for n, _ in model.named_parameters())
    fit(model, tiny_data, sparsifier.training, fit_settings(), desc="prune", modifiers=[sparsifier])
    noisy_accuracy = evaluate(model, tiny_data, "test", 500, "cpu")  # eval: thresholded
    masks = prune_oneshot(model, config)
    sparsifier.remove()
    assert all(torch.equal(masks[n], m) for n, m in masks_of(model).items())
    assert set(masks) == {"net.1", "net.3"}
    assert not any(n.endswith(PARAM) for n, _ in model.named_parameters())
    assert all(tprune.is_pruned(m) for m in (model.net[1], model.net[3]))
    kept = masks["net.1"].float().mean().item()
    assert kept < 0.5, kept  # most of the 784 x 16 weights learned to be noise
    assert evaluate(model, tiny_data, "test", 500, "cpu") == pytest.approx(noisy_accuracy)
    assert noisy_accuracy > 0.7  # measured 0.82 (0.78 before), keeping 24% of net.1
    make_permanent(model)
    assert torch.equal(model.net[1].weight != 0, masks["net.1"] & (model.net[1].weight != 0))
    assert int((model.net[1].weight == 0).sum()) >= int((~masks["net.1"]).sum())


def test_variational_pruning_rejects_settings_it_cannot_honour(tmp_path):
    with pytest.raises(ConfigError, match="needs kl_weight"):
        parse_pipeline(
            {"prune": {"method": "variational", "overrides": {"net.1": {"amount": 0.5}}}}, "x"
        )
    with pytest.raises(ConfigError, match="without qat_bits"):
        parse_pipeline({"prune": {"method": "variational", "variational": {"qat_bits": 4}}}, "x")
    with pytest.raises(ConfigError, match="gradual"):
        parse_pipeline({"prune": {"method": "variational", "schedule": "gradual"}}, "x")
    config = parse_pipeline({"prune": {"method": "variational", "kl_weight": 3.0}}, "x").prune
    assert (
        isinstance(config, VariationalConfig)
        and config.kl_weight == 3.0
        and config.log_alpha_threshold == 3.0
    )


def test_a_heavier_kl_term_removes_more_weights(tiny_data, fit_settings):
    kept = []
    for kl_weight in (0.1, 10.0):  # the method's tune range spans these
        model = tiny_model()
        config = PruneConfig(
            method="variational",
            kl_weight=kl_weight,
            variational=VariationalTraining(epochs=1, lr=3e-3, kl_ramp=0.0),
        )
        sparsifier = get_method("variational")(config).sparsifier(model, tiny_data.size("train"))
        fit(
            model,
            tiny_data,
            sparsifier.training,
            fit_settings(),
            desc="prune",
            modifiers=[sparsifier],
        )
        masks = prune_oneshot(model, config)
        sparsifier.remove()
        kept.append(sum(int(m.sum()) for m in masks.values()))
    assert kept[1] < kept[0], kept
