"""Measured widths: a layer keeps fewer units only where onnxruntime runs it measurably
faster (compress.pruning.widths), from a timing table cached per machine."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import compress.pruning.widths as widths
from compress.config import PruneConfig
from compress.pruning import make_permanent, prune_oneshot
from compress.pruning.shrink import shrink, units
from compress.pruning.widths import WidthTimer, fastest_width, layer_graph

# odd widths fall out of the blocked kernels: 16 runs about as fast as 12, 17-19 much slower
ODD_IS_SLOW = {12: 1.0, 13: 1.6, 14: 1.0, 15: 1.7, 16: 1.01, 17: 1.9, 18: 1.95, 19: 2.0}


def test_the_largest_width_near_the_fastest_within_reach_is_kept():
    assert fastest_width(19, ODD_IS_SLOW, reach=0.25, tolerance=0.03) == 16
    # 12 and 14 are as fast, but beyond reach of 19 (19 * 0.75 = 14.25: from 15 on)
    assert fastest_width(19, ODD_IS_SLOW, reach=0.4, tolerance=0.03) == 16  # 14 is smaller
    assert fastest_width(19, ODD_IS_SLOW, reach=0.25, tolerance=0.0) == 16
    assert fastest_width(14, ODD_IS_SLOW, reach=0.25, tolerance=0.03) == 14  # already fast
    flat = {w: 1.0 for w in range(10, 20)}
    assert fastest_width(19, flat, reach=0.25, tolerance=0.03) == 19  # nothing to gain
    assert fastest_width(30, ODD_IS_SLOW, reach=0.1, tolerance=0.03) == 30  # nothing measured


@pytest.mark.parametrize(
    ("layer", "shape", "out"),
    [
        (nn.Conv2d(8, 24, 3, padding=1), (8, 10, 10), (1, 13, 10, 10)),
        (nn.Conv2d(24, 24, 3, stride=2, groups=24), (24, 9, 9), (1, 13, 4, 4)),
        (nn.Linear(20, 50), (20,), (1, 13)),
    ],
)
def test_a_layer_alone_runs_in_onnxruntime_at_any_width(layer, shape, out):
    model = layer_graph(layer, shape, 13)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0].shape
    y = session.run(None, {"x": np.zeros(given, np.float32)})[0]
    assert y.shape == out


def test_the_timings_are_cached_per_machine_and_not_measured_twice(tmp_path, monkeypatch):
    layer = nn.Conv2d(4, 16, 3)
    table = WidthTimer(tmp_path).table(layer, (4, 8, 8), range(14, 17))
    assert sorted(table) == [14, 15, 16] and all(t > 0 for t in table.values())

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(widths, "timed_rounds", no_timing)
    assert WidthTimer(tmp_path).table(layer, (4, 8, 8), range(14, 17)) == table
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1  # one file per machine and onnxruntime version


def test_channels_with_measured_widths_keep_the_fast_count(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 24, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24 * 6 * 6, 10)
    ).eval()
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(WidthTimer, "table", lambda self, layer, shape, ws: ODD_IS_SLOW)
    # round_to = 1: any count; amount 0.2 keeps 19 of 24, and 16 is as fast as 12
    config = PruneConfig(method="channels", amount=0.2, widths="measured", round_to=1)
    prune_oneshot(model, config, sample=torch.zeros(2, 1, 8, 8))
    make_permanent(model)
    shrink(model, (1, 8, 8))
    assert units(model)["0"] == 16


@pytest.mark.parametrize(("times", "kept"), [({16: 1.0, 24: 1.5}, 16), ({16: 1.0, 24: 1.02}, 24)])
def test_measured_widths_are_multiples_of_round_to_from_the_rounded_count_down(
    tmp_path, monkeypatch, times, kept
):
    # The layers a layer feeds read its count as their input channels, which its own
    # table does not see: only multiples of round_to are timed. 19 of 24 rounds up to 24;
    # 16 is kept instead only where it is measurably faster.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 24, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24 * 6 * 6, 10)
    ).eval()
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path))
    asked = []

    def table(self, layer, shape, widths):
        asked.append(list(widths))
        return {w: times[w] for w in widths}

    monkeypatch.setattr(WidthTimer, "table", table)
    config = PruneConfig(method="channels", amount=0.2, widths="measured")  # round_to 8
    prune_oneshot(model, config, sample=torch.zeros(2, 1, 8, 8))
    make_permanent(model)
    shrink(model, (1, 8, 8))
    assert asked == [[16, 24]]
    assert units(model)["0"] == kept
