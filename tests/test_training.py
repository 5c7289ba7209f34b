"""The one training loop and its L1 term: penalty and proximal step."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.config import DistillConfig, L1Config, OptimConfig, TrainConfig
from compress.errors import CompressError, TrainingError
from compress.registry import build_model
from compress.training import (
    L1Term,
    distillation_loss,
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    modifiers_for,
    predict,
    training_layout,
    weight_params,
)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16})


def l1_config(
    lam: float, method: str = "penalty", params: str = "weights", lr: float = 0.05
) -> OptimConfig:
    return OptimConfig(
        epochs=1, lr=lr, l1=L1Config(**{"lambda": lam, "method": method, "params": params})
    )


def test_l1_applies_to_weight_matrices_only_unless_asked_for_all():
    model = tiny_model()
    weights = weight_params(model, "weights")
    assert [tuple(p.shape) for p in weights] == [(16, 784), (10, 16)]
    assert len(weight_params(model, "all")) == 4  # and both biases


def test_l1_penalty_equals_lambda_times_the_sum_of_absolute_weights():
    model = tiny_model()
    lam = 3e-4
    expected = lam * sum(p.abs().sum() for n, p in model.named_parameters() if n.endswith("weight"))
    penalty = L1Term(model, l1_config(lam)).penalty()
    torch.testing.assert_close(penalty, expected, rtol=1e-5, atol=0)


def test_l1_penalty_over_all_parameters_includes_the_biases():
    model = tiny_model()
    expected = 1e-3 * sum(p.abs().sum() for p in model.parameters())
    torch.testing.assert_close(
        L1Term(model, l1_config(1e-3, params="all")).penalty(), expected, rtol=1e-5, atol=0
    )


def test_l1_penalty_is_differentiable_towards_sign_of_the_weights():
    model = tiny_model()
    L1Term(model, l1_config(0.5)).penalty().backward()
    first = model.net[1].weight
    torch.testing.assert_close(first.grad, 0.5 * torch.sign(first.detach()))


@pytest.mark.parametrize(("lam", "method"), [(0.0, "penalty"), (1e-3, "proximal")])
def test_no_penalty_term_without_lambda_or_with_the_proximal_method(lam, method):
    assert L1Term(tiny_model(), l1_config(lam, method)).penalty() is None


def test_the_proximal_step_soft_thresholds_and_makes_exact_zeros():
    model = tiny_model()
    weight = model.net[1].weight
    before = weight.detach().clone()
    bias_before = model.net[1].bias.detach().clone()
    lr, lam = 0.1, 0.15  # shrink by 0.015: about 40 % of the initial weights (|w| < 1/28)
    L1Term(model, l1_config(lam, "proximal")).proximal_step(lr)
    shrink = lr * lam
    expected = torch.sign(before) * torch.clamp_min(before.abs() - shrink, 0.0)
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=1e-7)
    small = before.abs() <= shrink
    assert small.any() and (~small).any()
    assert torch.all(weight.detach()[small] == 0)  # exactly zero, not just small
    assert torch.all(weight.detach()[~small] != 0)
    assert torch.equal(model.net[1].bias.detach(), bias_before)  # params = "weights"


def test_the_proximal_step_does_nothing_for_the_penalty_method():
    model = tiny_model()
    before = model.net[1].weight.detach().clone()
    L1Term(model, l1_config(0.15, "penalty")).proximal_step(0.1)
    assert torch.equal(model.net[1].weight.detach(), before)


def test_training_with_proximal_l1_leaves_exact_zero_weights(tiny_data, fit_settings):
    model = tiny_model()
    fit(model, tiny_data, l1_config(0.02, "proximal"), fit_settings(), desc="train")
    first = model.net[1].weight.detach()
    assert (first == 0).float().mean() > 0.3


def test_training_with_the_l1_penalty_shrinks_the_weights(tiny_data, fit_settings):
    plain, penalised = tiny_model(), tiny_model()
    fit(plain, tiny_data, l1_config(0.0), fit_settings(), desc="train")
    fit(penalised, tiny_data, l1_config(0.01), fit_settings(), desc="train")
    assert penalised.net[1].weight.abs().sum() < plain.net[1].weight.abs().sum()


def test_one_epoch_on_the_tiny_data_learns_mnist(tiny_data, fit_settings):
    model = tiny_model()
    before = evaluate(model, tiny_data, "test", 500, "cpu")
    result = fit(model, tiny_data, TrainConfig(epochs=1, lr=0.1), fit_settings(), desc="train")
    assert len(result.history) == 1
    row = result.final
    assert set(row) >= {"epoch", "loss", "train_accuracy", "test_accuracy", "lr", "seconds"}
    assert row["test_accuracy"] > 0.7 > before
    assert row["test_accuracy"] == pytest.approx(
        evaluate(model, tiny_data, "test", 500, "cpu"), abs=1e-6
    )


def test_training_is_reproducible_with_the_same_seed(tiny_data, fit_settings):
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    config = TrainConfig(epochs=1, lr=0.1)
    fit(a, tiny_data, config, fit_settings(seed=1), desc="a")
    fit(b, tiny_data, config, fit_settings(seed=1), desc="b")
    fit(c, tiny_data, config, fit_settings(seed=2), desc="c")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.net[1].weight, c.net[1].weight)  # another shuffle


def test_cpu_convolutions_train_in_channels_last_and_come_back_in_the_usual_layout():
    lenet5 = build_model("lenet5", kwargs={"num_classes": 10})
    assert training_layout(lenet5, torch.device("cpu")) is torch.channels_last
    assert training_layout(tiny_model(), torch.device("cpu")) is torch.contiguous_format  # no conv
    assert training_layout(lenet5, torch.device("cuda")) is torch.contiguous_format
    conv3d = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv3d(1, 1, 1))
    assert training_layout(conv3d, torch.device("cpu")) is torch.contiguous_format  # 5-d weight


class ViewsItsFeatures(nn.Module):
    """The classic `x.view(x.size(0), -1)` flatten, which channels_last tensors refuse."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


def test_a_model_that_cannot_run_in_channels_last_trains_in_the_usual_layout(
    tiny_data, fit_settings
):
    model = ViewsItsFeatures()
    sample = torch.randn(2, 1, 28, 28)
    with pytest.raises(RuntimeError):
        model.to(memory_format=torch.channels_last)(
            sample.contiguous(memory_format=torch.channels_last)
        )
    model.to(memory_format=torch.contiguous_format)
    assert training_layout(model, torch.device("cpu"), sample) is torch.contiguous_format
    assert (
        training_layout(
            build_model("lenet5", kwargs={"num_classes": 10}), torch.device("cpu"), sample
        )
        is torch.channels_last
    )
    fit(model, tiny_data, TrainConfig(epochs=1, lr=0.05), fit_settings(), desc="train")
    assert evaluate(model, tiny_data, "test", 500, "cpu") > 0.5


def test_training_in_channels_last_learns_what_the_usual_layout_learns(
    tiny_data, fit_settings, monkeypatch
):
    import compress.training.loop as training

    def trained(layout_of):
        monkeypatch.setattr(training, "training_layout", layout_of)
        torch.manual_seed(0)
        model = build_model("lenet5", kwargs={"num_classes": 10})
        seen = set()  # the layout of what conv2 was given while training
        model.features[2].register_forward_pre_hook(
            lambda module, inputs: (
                seen.add(
                    inputs[0].is_contiguous(memory_format=torch.channels_last)
                    and module.weight.is_contiguous(memory_format=torch.channels_last)
                )
                if module.training
                else None
            )
        )
        fit(
            model,
            tiny_data,
            TrainConfig(epochs=1, lr=0.02, momentum=0.9),
            fit_settings(),
            desc="train",
        )
        return model, seen

    fast, fast_layouts = trained(training_layout)
    usual, usual_layouts = trained(lambda model, device, sample=None: torch.contiguous_format)
    assert fast_layouts == {True} and usual_layouts == {False}
    assert fast.features[
        2
    ].weight.is_contiguous()  # back in the usual layout for export and the encoders
    for a, b in zip(fast.parameters(), usual.parameters(), strict=True):
        # equal at one thread; with more, rounding grown over the epoch's steps
        torch.testing.assert_close(a, b, atol=2e-2, rtol=0)
    assert evaluate(fast, tiny_data, "test", 500, "cpu") == pytest.approx(
        evaluate(usual, tiny_data, "test", 500, "cpu"), abs=0.01
    )


def test_zero_epochs_leave_the_model_as_built(tiny_data, fit_settings):
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, tiny_data, TrainConfig(epochs=0), fit_settings(), desc="train")
    assert result.history == []
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_a_diverging_loss_stops_training_with_advice(tiny_data, fit_settings):
    with pytest.raises(TrainingError, match="lower the learning rate or the L1 lambda"):
        fit(tiny_model(), tiny_data, TrainConfig(epochs=1, lr=1e30), fit_settings(), desc="train")


def test_evaluate_is_the_fraction_of_correct_predictions(tiny_data):
    model = tiny_model()
    x, y = tiny_data.tensors("test")
    expected = (predict(model, x).argmax(1) == y).sum().item() / len(y)
    accuracy = evaluate(model, tiny_data, "test", 128, "cpu")  # batches of 128 (last one 116)
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == expected


def test_predict_in_batches_equals_one_forward_pass():
    model = tiny_model().eval()
    x = torch.randn(25, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(predict(model, x, batch_size=7), model(x))


def test_distillation_loss_is_zero_against_itself_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert distillation_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(8, 10), 4.0).item() > 0


def test_distillation_without_a_teacher_is_refused(tiny_data, fit_settings):
    config = OptimConfig(epochs=1, distill=DistillConfig(alpha=0.5))
    with pytest.raises(CompressError, match="finetune: distill.alpha > 0 needs a teacher"):
        fit(tiny_model(), tiny_data, config, fit_settings(), desc="finetune")


@pytest.mark.parametrize(
    ("schedule", "expected_last_lr"),
    [("constant", 0.1), ("cosine", 0.0), ("step", 0.1 * 0.5**2)],
)
def test_learning_rate_schedules_end_where_expected(schedule, expected_last_lr):
    config = OptimConfig(epochs=4, lr=0.1, schedule=schedule, step_size=2, gamma=0.5)
    param = nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([param], config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[-1] == pytest.approx(expected_last_lr, abs=1e-12)
    assert all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:], strict=False))  # never rises


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_configured_optimizer_is_built(name):
    config = OptimConfig(optimizer=name, lr=0.02, weight_decay=1e-4)
    optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], config)
    assert type(optimizer).__name__.lower() == name
    assert optimizer.param_groups[0]["lr"] == 0.02
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_reweighted_l1_cuts_small_weights_harder_than_large_ones():
    model = tiny_model()
    weight = model.net[1].weight
    with torch.no_grad():
        weight.zero_()
        weight[0, :2] = torch.tensor([0.001, 0.5])
    config = OptimConfig(
        epochs=1, l1=L1Config(**{"lambda": 0.01, "method": "reweighted", "eps": 0.01})
    )
    l1 = L1Term(model, config)
    l1.start_epoch()
    l1.proximal_step(lr=0.1)
    small, large = weight[0, :2].tolist()
    assert small == 0.0  # shrink 0.1 * 0.01 / 0.011 = 0.0909 > 0.001
    assert large == pytest.approx(0.5 - 0.1 * 0.01 / 0.51, rel=1e-5)  # barely moved


def test_training_with_reweighted_l1_reaches_more_exact_zeros_than_plain_proximal_l1(
    tiny_data, fit_settings
):
    zeros = {}
    for method in ("proximal", "reweighted"):
        model = tiny_model()
        config = OptimConfig(epochs=2, lr=0.05, l1=L1Config(**{"lambda": 0.001, "method": method}))
        fit(model, tiny_data, config, fit_settings(), desc="train")
        zeros[method] = (model.net[1].weight == 0).float().mean().item()
        assert evaluate(model, tiny_data, "test", 500, "cpu") > 0.5  # still learns
    # Measured: about 0.4% zeros with plain proximal L1, 93% reweighted, at the same lambda.
    assert zeros["reweighted"] > zeros["proximal"] + 0.5, zeros


def test_distillation_in_the_loop_pulls_the_student_towards_the_teacher(tiny_data, fit_settings):
    # A teacher whose answers are a fixed relabelling of the digits (d -> 9 - d): with
    # alpha = 1 the student learns only from the teacher, and so learns the relabelling.
    images, labels = tiny_data.tensors("train")
    teacher_logits = torch.nn.functional.one_hot(9 - labels, 10).float() * 8
    config = OptimConfig(epochs=2, lr=0.1, distill=DistillConfig(alpha=1.0, temperature=2.0))
    student = tiny_model()
    modifiers = modifiers_for(config, "finetune", teacher_logits=teacher_logits)
    fit(student, tiny_data, config, fit_settings(), desc="finetune", modifiers=modifiers)
    predicted = predict(student.eval(), images).argmax(1)
    assert (predicted == 9 - labels).float().mean() > 0.6
    assert (predicted == labels).float().mean() < 0.2
