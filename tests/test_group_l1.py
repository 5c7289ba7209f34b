"""Group L1 (group lasso) in the training loop: structures reach exact zeros and stay there."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from compress.config import L1Config, OptimConfig, parse_pipeline
from compress.errors import ConfigError
from compress.training import L1Term, fit, make_optimizer


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 10)
    )


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def group_config(
    lam: float, groups, method: str = "proximal", lr: float = 0.05, **optim
) -> OptimConfig:
    l1 = L1Config(**{"lambda": lam, "method": method, "groups": groups})
    return OptimConfig(epochs=1, lr=lr, l1=l1, **optim)


def test_group_penalty_is_lambda_times_the_sum_of_row_and_column_norms():
    model = mlp()
    lam = 1e-3
    penalty = L1Term(model, group_config(lam, ["neurons", "inputs"], "penalty")).penalty()
    w1, w2, w3 = model[1].weight, model[3].weight, model[5].weight
    rows = (
        w1.norm(dim=1).sum() + w2.norm(dim=1).sum()
    )  # not the output layer's rows: they are the classes
    columns = w1.norm(dim=0).sum() + w2.norm(dim=0).sum() + w3.norm(dim=0).sum()
    torch.testing.assert_close(penalty, lam * (rows + columns), rtol=1e-5, atol=0)


def test_group_penalty_gradient_is_the_gradient_of_the_penalty():
    model = mlp()
    term = L1Term(model, group_config(0.01, "neurons", "penalty"))
    term.add_gradient()
    clone = mlp()
    (0.01 * (clone[1].weight.norm(dim=1).sum() + clone[3].weight.norm(dim=1).sum())).backward()
    for i in (1, 3):
        torch.testing.assert_close(model[i].weight.grad, clone[i].weight.grad, rtol=1e-5, atol=1e-8)
    assert model[5].weight.grad is None  # the output layer has no unit groups


def test_the_group_proximal_step_scales_each_row_and_zeroes_the_small_ones():
    model = mlp()
    w = model[1].weight
    before = w.detach().clone()
    norms = before.norm(dim=1)
    shrink = float(norms.median())  # half the neurons fall under the threshold
    L1Term(model, group_config(1.0, "neurons")).proximal_step(shrink)
    expected = before * torch.clamp_min(1 - shrink / norms, 0).unsqueeze(1)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-7)
    dead = norms <= shrink
    assert dead.any() and (~dead).any()
    assert torch.all(w.detach()[dead] == 0)
    assert torch.all(w.detach()[~dead].abs().sum(1) > 0)


def test_channel_and_input_groups_of_a_conv_net():
    model = cnn()
    term = L1Term(model, group_config(1.0, ["channels", "inputs"]))
    kinds = sorted((tuple(g.param.shape), g.dim) for g in term.groups)
    # conv1 and conv2 channels (the Linear output layer has no unit groups), inputs of all three
    assert kinds == [
        ((6, 1, 5, 5), 0),
        ((6, 1, 5, 5), 1),
        ((8, 6, 5, 5), 0),
        ((8, 6, 5, 5), 1),
        ((10, 128), 1),
    ]
    conv2 = model[3].weight
    shrink = float(conv2.detach().flatten(1).norm(dim=1).max()) + 1
    L1Term(model, group_config(1.0, "channels")).proximal_step(shrink)
    assert torch.count_nonzero(conv2) == 0  # every channel of a hidden conv removed


@pytest.mark.parametrize(
    ("optimizer", "lr", "momentum"), [("sgd", 0.05, 0.9), ("adam", 0.005, 0.0)]
)
def test_zeroed_groups_stay_zero_through_training(tiny_data, fit_settings, optimizer, lr, momentum):
    model = mlp()
    # over the epoch's steps, lr * lambda * steps shrinks each group by about 0.5, the norm of a
    # fresh row
    steps = math.ceil(tiny_data.size("train") / 32)
    config = group_config(
        0.5 / (lr * steps), ["neurons", "inputs"], optimizer=optimizer, momentum=momentum, lr=lr
    )
    fit(model, tiny_data, config, fit_settings(batch_size=32), desc="train")
    dead_rows = model[1].weight.detach().abs().sum(1) == 0
    dead_inputs = model[1].weight.detach().abs().sum(0) == 0
    assert dead_rows.any() and dead_inputs.any()  # structures reached exact zeros

    # A plain optimizer step moves the dead rows (their gradient is not zero); the term's
    # next proximal step puts them back to zero and clears their momentum.
    term = L1Term(model, config, make_optimizer(model.parameters(), config))
    assert term.groups[0].dead.sum() == dead_rows.sum()
    optimizer_ = term.optimizer
    loss = model(torch.randn(8, 1, 28, 28)).pow(2).mean()
    loss.backward()
    optimizer_.step()
    term.proximal_step(1e-6)
    assert torch.all(model[1].weight.detach()[dead_rows] == 0)
    assert torch.all(model[1].weight.detach()[:, dead_inputs] == 0)
    state = optimizer_.state[model[1].weight]
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == model[1].weight.shape:
            assert torch.all(value[dead_rows] == 0)


def test_groups_config_accepts_one_kind_or_a_list_and_rejects_others():
    assert L1Config(**{"groups": "neurons"}).group_kinds == ("neurons",)
    assert L1Config(**{"groups": ["neurons", "inputs", "neurons"]}).group_kinds == (
        "neurons",
        "inputs",
    )
    assert L1Config().group_kinds == ()
    with pytest.raises(ConfigError, match="groups"):
        parse_pipeline({"train": {"l1": {"lambda": 1e-3, "groups": "rows"}}}, name="x")
    with pytest.raises(ConfigError, match="params = 'weights' with groups"):
        parse_pipeline(
            {"train": {"l1": {"lambda": 1e-3, "groups": "neurons", "params": "all"}}}, name="x"
        )


def test_input_groups_under_a_pruning_mask_are_measured_on_the_live_weights():
    # A pruned unit's entries of weight_orig are no part of the model: an input whose live
    # weights are all but zero must reach zero even when the pruned row still holds large ones.
    import torch.nn.utils.prune as tprune

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].weight[:, 0] = 1e-3  # input 0: tiny live weights ...
        model[1].weight[0, 0] = 10.0  # ... and a large one in the unit pruned below
    keep = torch.ones(3, 4)
    keep[0] = 0.0
    tprune.custom_from_mask(model[1], "weight", keep)
    L1Term(model, group_config(0.1, "inputs")).proximal_step(
        0.1
    )  # shrink 0.01 > live norm of input 0
    live = model[1].weight_orig * model[1].weight_mask
    assert torch.all(live[:, 0] == 0)
    assert torch.all(live[1:, 1:] > 0)
