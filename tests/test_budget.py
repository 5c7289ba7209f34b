"""Budgets: each artifact checked against the device's [budget] limits, what it misses said in
one phrase per limit, and `compress run --require-budget` exiting 4 when none fits."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compress.budget import KB, Limits, budget_lines, check_artifacts, misses, violation
from compress.cli import main
from compress.config import parse_pipeline
from compress.errors import ConfigError


def row(name="pruned", flash=100 * KB, ram=50 * KB, act=10 * KB, vs_dense=1.0, val=0.98):
    return {
        "name": name,
        "flash_bytes": flash,
        "ram_bytes": ram,
        "peak_activation_bytes": act,
        "latency_ms_b1_p50": 0.1 * vs_dense,
        "latency_vs_dense": vs_dense,
        "val_accuracy": val,
        "status": "ok",
    }


def test_each_missed_limit_is_one_phrase_with_how_far_over():
    big = row(flash=300 * KB, ram=int(76.3 * KB), act=40 * KB, vs_dense=1.25)
    limits = Limits(flash_kb=256, ram_kb=64, activation_kb=32, latency_vs_dense=1.1, max_drop=0.5)
    assert misses(big, limits, drop=0.8) == [
        "flash 44.0 KB over",
        "ram 12.3 KB over",
        "activation 8.0 KB over",
        "latency 0.15x dense over",
        "accuracy 0.30 pts over",
    ]
    assert misses(row(), limits, drop=0.5) == []  # exactly at a limit fits
    assert misses(row(ram=None), Limits(ram_kb=64)) == ["ram unknown"]  # not estimated
    assert misses(row(), Limits(latency_ms=0.05)) == ["latency 0.050 ms over"]


def test_the_violation_is_zero_when_it_fits_and_grows_with_the_excess():
    limits = Limits(flash_kb=100, ram_kb=50)
    assert violation(row(), limits) == 0.0
    assert violation(row(flash=150 * KB), limits) == pytest.approx(0.5)
    assert violation(row(flash=150 * KB, ram=100 * KB), limits) == pytest.approx(1.5)


def test_the_check_marks_exactly_the_artifacts_that_fit_on_validation_drop():
    rows = [
        row("dense", flash=400 * KB, val=0.99),
        row("pruned", flash=200 * KB, val=0.985),
        row("pruned-int8", flash=60 * KB, val=0.97),  # 2 points below dense
        {**row("pruned-int4", flash=30 * KB, val=0.989), "status": "failed: logits differ"},
    ]
    check_artifacts(rows, Limits(flash_kb=256, max_drop=1.0))
    assert [r["budget"]["fits"] for r in rows] == [False, True, False, False]
    assert budget_lines(rows) == [
        "dense: flash 144.0 KB over",
        "pruned-int8: accuracy 1.00 pts over",
        "pruned-int4: verification failed",
    ]


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"ram": 64}, "ram"),
        ({"flash_kb": -1}, "flash_kb"),
        ({"latency_ms": 1.0, "latency_vs_dense": 1.1}, "latency_ms or latency_vs_dense"),
    ],
)
def test_a_bad_budget_section_is_refused(budget, message):
    with pytest.raises(ConfigError, match=message):
        parse_pipeline({"budget": budget}, "x")


@pytest.mark.slow
def test_run_require_budget_exits_4_with_a_line_per_artifact_and_0_when_one_fits(
    pipeline_file, tmp_path
):
    out = tmp_path / "run"
    impossible = pipeline_file({"budget.flash_kb": 1.0, "budget.max_drop": 5.0})
    args = ["run", "--out", str(out), "--no-progress", "--require-budget"]
    result = CliRunner().invoke(main, [*args[:1], str(impossible), *args[1:]])
    assert result.exit_code == 4, result.output
    report = json.loads((out / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    lines = [line for line in result.stderr.splitlines() if line.startswith("budget: ")]
    assert [line.split(":")[1].strip() for line in lines] == names
    assert all(" KB over" in line for line in lines)
    assert result.stderr.splitlines()[-1].startswith("error: --require-budget: no artifact fits")
    assert report["budget"] == {"flash_kb": 1.0, "max_drop": 5.0}

    # The int8 files (about 13 KB) fit 30 KB, the float ones (about 50 KB) do not; all cached.
    some = pipeline_file({"budget.flash_kb": 30.0}, name="some")
    again = CliRunner().invoke(main, [*args[:1], str(some), *args[1:]])
    assert again.exit_code == 0, again.output
    report = json.loads((out / "report.json").read_text())
    fits = {a["name"]: a["budget"]["fits"] for a in report["artifacts"]}
    assert fits == {a["name"]: a["flash_bytes"] <= 30 * KB for a in report["artifacts"]}
    assert fits["pruned-int8-static"] and not fits["dense"]
    assert "fits" in again.stdout and "budget" in again.stdout.splitlines()[1]


def test_require_budget_without_limits_is_a_mistake(pipeline_file):
    result = CliRunner().invoke(main, ["run", str(pipeline_file()), "--require-budget"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --require-budget: ")


# ---------------------------------------------------------------- tune and search


def report_of(*rows) -> dict:
    """A run's report.json with these artifact rows (dense first)."""
    artifacts = [{**r, "accuracy": r["val_accuracy"], "deploy_bytes": r["flash_bytes"] // 4,
                  "sparsity": 0.9} for r in rows]  # fmt: skip
    return {
        "artifacts": artifacts,
        "training": {"pruned_sparsity": 0.9},
        "stages": [{"name": "train", "cached": False}],
    }


RUN = report_of(
    row("dense", flash=400 * KB, ram=420 * KB, val=0.99),
    row("pruned-int8", flash=100 * KB, ram=120 * KB, val=0.985),  # within 1 pt, 120 KB RAM
    row("pruned-packed", flash=40 * KB, ram=420 * KB, val=0.988),  # smaller, but decodes to 420
)


def test_tune_picks_the_smallest_artifact_within_the_drop_and_the_device_limits():
    from compress.analysis.tune import evaluate_point

    plain = evaluate_point(RUN, max_drop=1.0, reference=0.99)
    assert plain["best"]["artifact"] == "pruned-packed" and plain["meets"]
    limited = evaluate_point(RUN, 1.0, reference=0.99, limits=Limits(flash_kb=256, ram_kb=128))
    assert limited["best"]["artifact"] == "pruned-int8" and limited["meets"]
    assert limited["best"]["misses"] == []
    none = evaluate_point(RUN, 1.0, reference=0.99, limits=Limits(ram_kb=64))
    assert not none["meets"]
    assert none["best"]["artifact"] == "pruned-int8"  # the one that misses least
    assert none["best"]["misses"] == ["ram 56.0 KB over"]


def test_a_search_trial_beyond_the_device_limits_is_infeasible_with_its_violation():
    from compress.analysis.search import artifact_rows, constraint_of, trial_score

    limits = Limits(flash_kb=256, ram_kb=128)
    rows = artifact_rows(RUN, 0.99, "trial-0000", limits)
    best = trial_score(rows, 1.0, limits=limits)
    assert best["artifact"] == "pruned-int8" and constraint_of(best, 1.0, limits) <= 0
    tight = Limits(ram_kb=100)
    best = trial_score(artifact_rows(RUN, 0.99, "trial-0000", tight), 1.0, limits=tight)
    assert constraint_of(best, 1.0, tight) == pytest.approx(0.2)  # 20 KB over 100 KB
    assert best["misses"] == ["ram 20.0 KB over"]


def test_a_search_with_device_limits_says_when_nothing_is_within_them():
    from compress.analysis.pareto import within_budget
    from compress.analysis.search import artifact_rows
    from compress.analysis.search_report import chosen_sentence

    points = [
        {**r, "label": f"trial-0000/{r['artifact']}", "trial": "trial-0000", "run_dir": "t"}
        for r in artifact_rows(RUN, 0.99, "trial-0000")
    ]
    within = within_budget(points, 1.0, limits=Limits(flash_kb=256, ram_kb=128))
    assert within["chosen"] == "trial-0000/pruned-int8"
    none = within_budget(points, 1.0, limits=Limits(flash_kb=256, ram_kb=64))
    assert none["chosen"] is None and none["closest"] == "trial-0000/pruned-int8"
    summary = {
        "points": points,
        "reference": {"dense_val_accuracy": 0.99},
        "budget": {**none, "limits": {"flash_kb": 256, "ram_kb": 64}},
        "chosen": None,
        "max_drop": 1.0,
    }
    assert chosen_sentence(summary).endswith("and the device limits (flash_kb 256, ram_kb 64)")
