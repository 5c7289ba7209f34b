"""`compress compare`: artifacts of several runs side by side, from report.json files alone."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.analysis.compare import comparison_rows, human_bytes, load_runs
from compress.cli import main
from compress.errors import CompressError


def artifact(name, accuracy, size, deploy, sparsity=0.0, p50=0.02, status="ok"):
    return {
        "name": name,
        "path": f"{name}.onnx",
        "accuracy": accuracy,
        "bytes": size,
        "gzip_bytes": deploy + 300,
        "xz_bytes": deploy,
        "deploy_bytes": deploy,
        "deploy_form": ".onnx.xz",
        "sparsity": sparsity,
        "latency_ms_b1_p50": p50,
        "status": status,
    }


def write_run(folder: Path, pipeline: str, artifacts: list[dict]) -> Path:
    folder.mkdir(parents=True)
    report = {
        "pipeline": pipeline,
        "model": "simplenet",
        "baseline": "dense",
        "dataset": {"name": "mnist", "test_samples": 10000},
        "artifacts": artifacts,
    }
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    mnist = write_run(
        tmp_path / "mnist",
        "mnist",
        [
            artifact("dense", 0.9800, 407_000, 380_000),
            artifact("pruned", 0.9790, 407_000, 60_000, 0.85),
            artifact("pruned-int8-dynamic", 0.9785, 105_000, 21_000, 0.85),
        ],
    )
    lenet = write_run(
        tmp_path / "lenet300-a-long-name",
        "lenet300",
        [
            artifact("dense", 0.9840, 1_070_000, 990_000),
            artifact("pruned", 0.9830, 1_070_000, 80_000, 0.94),
            artifact(
                "pruned-int4-static", 0.9810, 290_000, 14_000, 0.94, status="failed: logits differ"
            ),
        ],
    )
    return [mnist, lenet]


def test_each_run_is_compared_with_its_own_dense_by_default(two_runs):
    rows = comparison_rows(load_runs(two_runs))
    assert len(rows) == 6
    row = next(r for r in rows if r["run"] == "mnist" and r["artifact"] == "pruned-int8-dynamic")
    assert row["accuracy_delta"] == pytest.approx(-0.15)
    assert row["compression"] == pytest.approx(round(407_000 / 21_000, 2))
    assert row["baseline"] == "mnist:dense"
    lenet = [r for r in rows if r["run"] == "lenet300-a-long-name"]
    assert [r["artifact"] for r in lenet] == [
        "dense",
        "pruned",
        "pruned-int4-static",
    ]  # largest first
    assert [r["run"] for r in rows] == ["mnist"] * 3 + [
        "lenet300-a-long-name"
    ] * 3  # in the order given


def test_a_named_baseline_is_one_artifact_for_every_run(two_runs):
    rows = comparison_rows(load_runs(two_runs), baseline="mnist:pruned")
    assert {r["baseline"] for r in rows} == {"mnist:pruned"}
    dense = next(r for r in rows if r["run"] == "lenet300-a-long-name" and r["artifact"] == "dense")
    assert dense["accuracy_delta"] == pytest.approx(0.5)
    assert dense["compression"] == pytest.approx(round(407_000 / 990_000, 2))
    per_run = comparison_rows(load_runs(two_runs), baseline="pruned")
    assert {r["baseline"] for r in per_run} == {"mnist:pruned", "lenet300-a-long-name:pruned"}
    by_run = comparison_rows(load_runs(two_runs), baseline="lenet300-a-long-name")
    assert {r["baseline"] for r in by_run} == {"lenet300-a-long-name:dense"}


@pytest.mark.parametrize(
    "baseline, message",
    [
        ("nope:dense", "no run 'nope'"),
        ("mnist:int4", "has no artifact 'int4'"),
        ("pruned-int4-static", "missing in mnist"),
    ],
)
def test_a_baseline_that_does_not_exist_is_an_error(two_runs, baseline, message):
    with pytest.raises(CompressError, match=message):
        comparison_rows(load_runs(two_runs), baseline=baseline)


def test_sort_by_size_and_by_accuracy(two_runs):
    by_size = comparison_rows(load_runs(two_runs), sort="size")
    assert [r["deploy_bytes"] for r in by_size] == sorted(r["deploy_bytes"] for r in by_size)
    by_accuracy = comparison_rows(load_runs(two_runs), sort="accuracy")
    assert by_accuracy[0]["artifact"] == "dense" and by_accuracy[0]["run"] == "lenet300-a-long-name"
    assert [r["accuracy"] for r in by_accuracy] == sorted(
        (r["accuracy"] for r in by_accuracy), reverse=True
    )


def test_the_table_fits_80_columns_and_marks_failed_artifacts(two_runs):
    for sort in ("run", "size"):
        result = CliRunner().invoke(main, ["compare", *map(str, two_runs), "--sort", sort])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(map(len, lines)) <= 80, "\n".join(lines)
        assert "pruned-int4-static*" in result.output and "* failed verification" in result.output
    grouped = CliRunner().invoke(main, ["compare", *map(str, two_runs)]).output
    assert "mnist (mnist), against dense" in grouped
    assert "21.0k" in grouped and "1.07M" in grouped and "-0.15" in grouped


def test_markdown_csv_and_json(two_runs):
    md = CliRunner().invoke(main, ["compare", *map(str, two_runs), "--format", "md"]).output
    assert md.splitlines()[0].startswith(
        "| run | artifact | val % | test % | Δ pts | bytes | gzip | deploy |"
    )
    assert (
        "| mnist | pruned-int8-dynamic | - | 97.85% | -0.15 | 105,000 | 21,300 | 21,000 | 19.4x |"
        in md
    )
    text = CliRunner().invoke(main, ["compare", *map(str, two_runs), "--format", "csv"]).output
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6 and rows[0]["run"] == "mnist" and rows[0]["baseline"] == "mnist:dense"
    data = json.loads(
        CliRunner().invoke(main, ["compare", *map(str, two_runs), "--format", "json"]).output
    )
    assert {
        "run",
        "artifact",
        "accuracy",
        "accuracy_delta",
        "deploy_bytes",
        "compression",
        "sparsity",
        "latency_ms_b1_p50",
    } <= set(data[0])


def test_runs_with_the_same_folder_name_are_told_apart_by_path(tmp_path):
    a = write_run(tmp_path / "a" / "run", "x", [artifact("dense", 0.9, 10, 8)])
    b = write_run(tmp_path / "b" / "run", "y", [artifact("dense", 0.8, 10, 8)])
    assert [r["run"] for r in load_runs([a, b])] == [str(a), str(b)]


def test_a_folder_without_report_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert result.exit_code == 2
    assert "report.json does not exist" in result.output


def test_human_bytes():
    assert [
        human_bytes(n) for n in (999, 1000, 45_240, 99_949, 99_950, 999_499, 999_500, 1_070_000)
    ] == ["999", "1.0k", "45.2k", "99.9k", "100k", "999k", "1.00M", "1.07M"]
