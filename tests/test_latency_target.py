"""A latency target for `channels` (`[prune] latency_vs_dense`): each group's width chosen
greedily from per-layer timings, NetAdapt style (compress.pruning.latency_target)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from compress.config import PruneConfig, ignored_by, parse_pipeline
from compress.errors import ConfigError
from compress.pruning import GradualPruner, make_permanent, method_for, prune_oneshot
from compress.pruning.latency_target import (
    GroupPlan,
    LayerLatencyTable,
    allocate_widths,
    candidate_widths,
    group_plan,
)
from compress.pruning.shrink import shrink, units
from compress.pruning.widths import WidthTimer
from tests.test_channels import EXAMPLE, cnn


def macs_timer(requests) -> list[float]:
    """A stand-in for onnxruntime: a layer's time is its multiply-adds (in x out x pixels)."""
    times = []
    for layer, shape, width in requests:
        if isinstance(layer, nn.Linear):
            times.append(shape[-1] * width * 1e-6)
        else:
            inputs = 1 if layer.groups > 1 else shape[0]
            times.append(inputs * width * math.prod(shape[1:]) * 1e-6)
    return times


@pytest.fixture
def fake_timing(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(WidthTimer, "times", lambda self, requests: macs_timer(requests))
    monkeypatch.setattr(WidthTimer, "overhead", lambda self: 0.0)


def test_candidate_widths_are_the_full_width_and_the_multiples_below_it():
    assert candidate_widths(20, 8) == [20, 16, 8]
    assert candidate_widths(16, 8) == [16, 8]
    assert candidate_widths(5, 8) == [5]  # too small to step: kept whole
    assert candidate_widths(3, 1) == [3, 2, 1]


def test_the_group_that_saves_most_time_per_importance_lost_is_cut_first():
    # A: each step saves 10 ms for 1 unit of importance; B: 1 ms for 10
    a = GroupPlan("a", [32, 24, 16, 8], [0.0, 1.0, 2.0, 3.0])
    b = GroupPlan("b", [32, 24, 16, 8], [0.0, 10.0, 20.0, 30.0])
    ms_a = {32: 40.0, 24: 30.0, 16: 20.0, 8: 10.0}
    ms_b = {32: 40.0, 24: 39.0, 16: 38.0, 8: 37.0}

    def estimate(allocations):
        return [ms_a[w["a"]] + ms_b[w["b"]] for w in allocations]

    allocation = allocate_widths([b, a], estimate, target=0.7)  # 80 ms dense: <= 56 ms
    assert [root for root, _, _ in allocation.history] == ["a", "a", "a"]
    assert allocation.widths == {"a": 8, "b": 32}
    assert allocation.dense_ms == 80.0 and allocation.estimated_ms == 50.0
    assert allocation.reached
    # a target below what cutting A alone gives goes on to B, only as far as it needs
    deeper = allocate_widths([b, a], estimate, target=0.6)  # <= 48 ms
    assert [root for root, _, _ in deeper.history] == ["a", "a", "a", "b", "b"]
    assert deeper.widths == {"a": 8, "b": 16} and deeper.estimated_ms == 48.0


def test_a_target_out_of_reach_stops_at_the_smallest_candidates():
    plan = GroupPlan("a", [16, 8], [0.0, 1.0])
    allocation = allocate_widths([plan], lambda ws: [float(w["a"]) for w in ws], target=0.1)
    assert allocation.widths == {"a": 8} and not allocation.reached


def test_importance_lost_counts_the_lowest_scores_first_and_removed_units_as_free():
    scores = torch.tensor([5.0, 1.0, float("-inf"), 2.0, 3.0, 4.0, 6.0, 7.0, 8.0])
    plan = group_plan("a", scores, step=4)
    assert plan.widths == [9, 8, 4]
    assert plan.lost == [0.0, 0.0, 0.0 + 1 + 2 + 3 + 4]


def test_a_layer_is_timed_at_its_input_width_as_well_as_its_output_width(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
    )
    model.append(nn.Flatten())
    model.append(nn.Linear(16 * 8 * 8, 10))
    from compress.pruning.channels import input_shapes, unit_groups

    example = torch.zeros(1, 1, 8, 8)
    groups = unit_groups(model, example)
    modules = dict(model.named_modules())
    layers = {n: (modules[n], s) for n, s in input_shapes(model, example).items()}
    orders = {g.root: list(range(g.size)) for g in groups}
    asked = []

    class Recording:
        def times(self, requests):
            asked.extend((shape, width) for _, shape, width in requests)
            return [1.0] * len(requests)

        def overhead(self):
            return 0.25  # of each layer's 1 ms alone: counted once for the model

    table = LayerLatencyTable(layers, groups, orders, Recording())
    assert table.estimate([{"0": 8, "2": 16}]) == [0.25 + 3 * 0.75]
    assert ((1, 8, 8), 8) in asked  # the first conv at 8 outputs
    assert ((8, 8, 8), 16) in asked  # the second reads 8 channels
    assert ((16 * 8 * 8,), 10) in asked
    table.estimate([{"0": 8, "2": 8}])
    assert ((8 * 8 * 8,), 10) in asked  # the Linear reads 8 channels of 8 x 8 pixels
    assert table.size == 5  # the first conv at 8 outputs is one entry, looked up twice


def test_channels_with_a_latency_target_meet_it_with_candidate_widths(tmp_path, fake_timing):
    model = cnn(tmp_path)
    config = PruneConfig(method="channels", latency_vs_dense=0.4)
    method = method_for(config)
    prune_oneshot(model, config, sample=EXAMPLE, method=method)
    summary = method.summary()
    assert summary["estimated_ms"] <= 0.4 * summary["dense_estimated_ms"]
    assert summary["estimated_vs_dense"] == summary["estimated_ms"] / summary["dense_estimated_ms"]
    assert summary["latency_vs_dense"] == 0.4 and summary["table_size"] > 0
    make_permanent(model)
    shrink(model, (1, 28, 28))
    kept = units(model)
    for root, width in summary["widths"].items():
        assert width["kept"] >= 1
        assert width["kept"] in candidate_widths(width["size"], 8)
        assert kept[root] == width["kept"]  # the masks keep what the search chose
    assert kept["out"] == 10


@pytest.mark.parametrize("initial", [0.0, 0.9])
def test_gradual_pruning_reaches_the_chosen_widths_at_its_last_step(tmp_path, fake_timing, initial):
    model = cnn(tmp_path)
    config = PruneConfig(
        method="channels",
        latency_vs_dense=0.4,
        schedule="gradual",
        gradual={"steps": 4, "ramp": 1.0, "initial_amount": initial},  # 0.9: past the target
    )
    pruner = GradualPruner(model, config, sample=EXAMPLE)
    chosen = pruner.method.summary()["widths"]
    alive = []
    for step in range(1, 5):
        pruner(step, 4)
        alive.append(int((model.conv.weight != 0).flatten(1).any(1).sum()))
    assert alive == sorted(alive, reverse=True) and alive[-1] == chosen["conv"]["kept"]
    make_permanent(model)
    shrink(model, (1, 28, 28))
    assert {r: units(model)[r] for r in chosen} == {r: w["kept"] for r, w in chosen.items()}


def config_error(prune: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_pipeline({"prune": prune}, name="test")
    return str(info.value)


@pytest.mark.parametrize(
    ("prune", "expected"),
    [
        ({"latency_vs_dense": 0.0}, "prune.latency_vs_dense: Input should be greater than 0"),
        ({"latency_vs_dense": 1.5}, "prune.latency_vs_dense: Input should be less than or equal"),
        (
            {"latency_vs_dense": 0.5, "overrides": {"fc": {"amount": 0.5}}},
            "prune: latency_vs_dense chooses every layer's width; it cannot be combined with "
            "overrides",
        ),
        (
            {"latency_vs_dense": 0.5, "widths": "measured"},
            "prune: latency_vs_dense times the layers itself; it needs widths = 'rounded'",
        ),
        (
            {"method": "magnitude", "latency_vs_dense": 0.5},
            "prune.latency_vs_dense: unknown key; it is a setting of method = 'channels'",
        ),
    ],
)
def test_a_wrong_latency_target_is_one_clear_error(prune, expected):
    message = config_error({"method": "channels", **prune})
    line = next(line for line in message.splitlines() if "latency_vs_dense" in line)
    assert expected in line
    assert sum("latency_vs_dense" in line for line in message.splitlines()) == 1


def test_amount_and_scope_are_named_as_unused_with_a_latency_target():
    config = parse_pipeline({"prune": {"method": "channels", "latency_vs_dense": 0.5}}, name="p")
    assert "latency_vs_dense is set" in ignored_by(config, "prune.amount")
    assert "latency_vs_dense is set" in ignored_by(config, "prune.scope")
    assert config.prune.latency_vs_dense == 0.5


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.c = nn.Conv2d(32, 16, 3, padding=1)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.out(torch.relu(self.c(x)).mean((2, 3)))


def test_a_tiny_cnn_timed_for_real_gets_kernel_friendly_widths_and_a_record(tmp_path, monkeypatch):
    from compress.stages.prune import measured_vs_dense

    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model, dense = TinyCNN().eval(), TinyCNN().eval()
    dense.load_state_dict(model.state_dict())
    sample = torch.randn(4, 3, 8, 8)
    config = PruneConfig(method="channels", latency_vs_dense=0.6)
    method = method_for(config)
    prune_oneshot(model, config, sample=sample, method=method)
    summary = method.summary()
    assert set(summary["widths"]) == {"a", "b", "c"}
    assert all(w["kept"] % 8 == 0 for w in summary["widths"].values())
    assert summary["reached"] == (summary["estimated_vs_dense"] <= 0.6)
    assert list((tmp_path / "widths").glob("*.json"))  # the table is cached, one folder
    measured = measured_vs_dense(model, dense, sample, opset=17)
    assert measured["vs_dense_low"] <= measured["vs_dense"] <= measured["vs_dense_high"]
    assert 0 < measured["vs_dense"] < 5


def test_the_prune_stage_records_the_target_the_estimates_and_the_measured_ratio(
    pipeline_file, tmp_path, fake_timing
):
    import json

    from compress.config import load_pipeline
    from compress.pipeline import run_pipeline

    pipeline = pipeline_file({"prune": {"method": "channels", "latency_vs_dense": 0.5}})
    run_pipeline(load_pipeline(pipeline), out_dir=tmp_path / "run", progress=False, until="prune")
    stage = json.loads((tmp_path / "run" / "prune" / "stage.json").read_text())
    summary = stage["metrics"]["method_summary"]
    assert summary["latency_vs_dense"] == 0.5 and summary["reached"]
    assert summary["estimated_ms"] <= 0.5 * summary["dense_estimated_ms"]
    assert summary["table_size"] > 0 and summary["widths"]
    assert all(1 <= w["kept"] <= w["size"] for w in summary["widths"].values())
    measured = summary["measured"]
    assert measured["vs_dense_low"] <= measured["vs_dense"] <= measured["vs_dense_high"]
