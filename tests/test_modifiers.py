"""Training modifiers (compress.modifier): what a method adds to the one loop, as hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.config import DistillConfig, L1Config, OptimConfig
from compress.modifier import Modifier
from compress.qat import FakeQuantization
from compress.registry import build_model
from compress.training import L1, Distillation, fit, modifiers_for, param_groups


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("simplenet", kwargs={"num_classes": 10, "hidden": 16})


class Recorder(Modifier):
    """Writes down each hook the loop calls, with its step numbers."""

    def __init__(self):
        self.calls = []

    def attach(self, model, layout):
        self.calls.append("attach")

    def start(self, model, optimizer):
        self.calls.append("start")

    def epoch_start(self, epoch):
        self.calls.append(f"epoch_start {epoch}")

    def task_loss(self, loss, logits, batch):
        self.calls.append(f"task_loss {len(batch.y)}")
        return loss

    def loss(self, step, total, logits, batch):
        self.calls.append(f"loss {step}/{total}")

    def after_backward(self):
        self.calls.append("after_backward")

    def after_step(self, step, total, lr):
        self.calls.append(f"after_step {step}/{total} lr {lr}")

    def epoch_end(self, epoch):
        self.calls.append(f"epoch_end {epoch}")

    def detach(self, model):
        self.calls.append("detach")


def test_the_loop_calls_each_hook_in_order_with_the_steps_counted_over_the_whole_fit(
    tiny_data, fit_settings
):
    recorder = Recorder()
    config = OptimConfig(epochs=2, lr=0.1)
    fit(
        tiny_model(),
        tiny_data,
        config,
        fit_settings(batch_size=1000),
        desc="train",
        modifiers=[recorder],
    )
    size = tiny_data.size("train")  # the training split: two batches, the second the rest

    def step(done, batch):
        return [
            f"task_loss {batch}",
            f"loss {done}/4",
            "after_backward",
            f"after_step {done + 1}/4 lr 0.1",
        ]

    epochs = [
        [f"epoch_start {e}", *step(2 * e, 1000), *step(2 * e + 1, size - 1000), f"epoch_end {e}"]
        for e in range(2)
    ]
    assert recorder.calls == ["attach", "start", *epochs[0], *epochs[1], "detach"]


def test_a_new_modifier_is_a_few_lines(tiny_data, fit_settings):
    class FreezeFirstLayer(Modifier):
        def __init__(self, layer: nn.Module):
            self.layer = layer

        def after_backward(self):
            self.layer.weight.grad = None  # the optimizer skips a parameter without a gradient

    model = tiny_model()
    before = model.net[1].weight.detach().clone()
    fit(
        model,
        tiny_data,
        OptimConfig(epochs=1, lr=0.1),
        fit_settings(),
        "train",
        [FreezeFirstLayer(model.net[1])],
    )
    assert torch.equal(model.net[1].weight, before)
    assert not torch.equal(model.net[3].weight, tiny_model().net[3].weight)  # the rest trained


def test_parameters_a_modifier_names_are_trained_without_weight_decay(tiny_data, fit_settings):
    class Scale(Modifier):
        """A parameter of its own that the loss reaches with a zero gradient."""

        def __init__(self):
            self.scale = nn.Parameter(torch.ones(()))

        def attach(self, model, layout):
            model.register_parameter("scale", self.scale)

        def no_decay_params(self):
            return [self.scale]

        def loss(self, step, total, logits, batch):
            return 0.0 * self.scale

    model = tiny_model()
    groups = param_groups(model, [])
    assert len(groups) == 1
    scale = Scale()
    fit(
        model,
        tiny_data,
        OptimConfig(epochs=1, lr=0.1, weight_decay=0.5),
        fit_settings(),
        "train",
        [scale],
    )
    assert scale.scale.item() == 1.0  # decay would have shrunk it on every step
    decayed = param_groups(model, [scale])
    assert [len(g["params"]) for g in decayed] == [4, 1] and decayed[1]["weight_decay"] == 0.0


def test_modifiers_for_builds_what_a_config_asks_for_the_l1_term_first_fake_quantization_last():
    assert modifiers_for(OptimConfig(), "train") == []
    extra = Recorder()
    config = OptimConfig(
        l1=L1Config(**{"lambda": 1e-4}), distill=DistillConfig(alpha=0.5), qat_bits=8
    )
    built = modifiers_for(config, "finetune", extra, teacher=tiny_model())
    assert [type(m) for m in built] == [L1, Distillation, Recorder, FakeQuantization]


def test_fake_quantization_is_on_while_training_and_off_after(tiny_data, fit_settings):
    model = tiny_model()
    seen = []
    model.net[1].register_forward_hook(
        lambda m, i, o: seen.append(len(m.weight.unique())) if m.training else None
    )
    fit(
        model,
        tiny_data,
        OptimConfig(epochs=1, lr=0.1, qat_bits=4),
        fit_settings(batch_size=1000),
        "train",
    )
    assert max(seen) <= 16 * 16  # 16 output rows, at most 16 int4 levels each
    assert len(model.net[1]._forward_pre_hooks) == 1  # only the all-ones mask's hook is left
    assert len(model.net[1].weight_orig.unique()) > 16 * 16  # the trained weights are not quantized


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_distillation_replaces_the_task_loss_by_the_mix(alpha):
    from compress.modifier import Batch
    from compress.training import distillation_loss

    logits, teacher = torch.randn(4, 10), torch.randn(6, 10)
    batch = Batch(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), torch.tensor([5, 0, 2, 1]))
    modifier = Distillation(DistillConfig(alpha=alpha, temperature=2.0), teacher_logits=teacher)
    mixed = modifier.task_loss(torch.tensor(3.0), logits, batch)
    expected = (1 - alpha) * 3.0 + alpha * distillation_loss(logits, teacher[batch.index], 2.0)
    torch.testing.assert_close(mixed, torch.as_tensor(expected))
