"""The report: comparisons against the baseline, and the table, Markdown, CSV and JSON forms."""

from __future__ import annotations

import csv
import io

import pytest

from compress.errors import CompressError
from compress.report import (
    CSV_FIELDS,
    add_comparisons,
    format_csv,
    format_delta,
    format_markdown,
    format_table,
    inputs_lines,
    load_report,
    write_reports,
)


def artifact(name: str, accuracy: float, size: int, gz: int, xz: int, **extra) -> dict:
    form = ".onnx.gz" if gz <= xz else ".onnx.xz"
    row = {
        "name": name,
        "path": f"{name}.onnx",
        "bytes": size,
        "gzip_bytes": gz,
        "xz_bytes": xz,
        "deploy_bytes": min(gz, xz),
        "deploy_form": form,
        "deploy_path": f"deploy/{name}{form}",
        "params": 1000,
        "nonzero_params": 400,
        "sparsity": 0.6,
        "val_accuracy": accuracy,
        "accuracy": accuracy,
        "agreement": 1.0,
        "max_logit_diff": 1e-6,
        "latency_ms_b1_p50": 0.0123,
        "latency_ms_b1_p95": 0.02,
        "throughput": 123456.7,
        "status": "ok",
    }
    return {**row, **extra}


def sample_report() -> dict:
    artifacts = [
        artifact("dense", 0.9, 100_000, 92_000, 90_000, sparsity=0.0, nonzero_params=1000),
        artifact("pruned", 0.885, 100_000, 30_000, 25_000),
        artifact(
            "pruned-int8-dynamic", 0.8875, 27_000, 9_000, 9_500, agreement=0.99, max_logit_diff=None
        ),
    ]
    add_comparisons(artifacts)
    return {
        "pipeline": "tiny",
        "config_hash": "0123456789abcdef",
        "model": "simplenet",
        "dataset": {
            "name": "mnist",
            "train_samples": 1800,
            "val_samples": 200,
            "test_samples": 500,
        },
        "device": "cpu",
        "versions": {"onnxruntime": "1.0", "torch": "2", "onnx": "1"},
        "artifacts": artifacts,
        "stages": [
            {"name": "train", "key": "k1", "seconds": 1.25, "cached": False},
            {"name": "prune", "key": "k2", "seconds": 0.5, "cached": True},
        ],
    }


def test_comparisons_are_against_the_dense_baseline():
    report = sample_report()
    dense, pruned, dynamic = report["artifacts"]
    # ratio = dense .onnx bytes / each artifact's deployable package bytes
    assert dense["compression"] == round(100_000 / 90_000, 2)
    assert pruned["compression"] == 4.0
    assert dynamic["compression"] == round(100_000 / 9_000, 2)
    assert dense["accuracy_delta"] == 0.0
    assert pruned["accuracy_delta"] == -1.5
    assert dynamic["accuracy_delta"] == -1.25


def test_the_table_shows_every_artifact_and_the_title():
    text = format_table(sample_report())
    lines = text.splitlines()
    assert lines[0] == "tiny (simplenet) on mnist, 200 validation and 500 test samples"
    assert lines[1].split()[:5] == ["artifact", "val", "%", "test", "%"]
    assert [line.split()[0] for line in lines[3:6]] == ["dense", "pruned", "pruned-int8-dynamic"]
    assert "88.50%" in lines[4] and "-1.50" in lines[4] and "4.0x" in lines[4]
    assert "100,000" in lines[3]
    assert text.endswith("(smaller of .onnx.gz and .onnx.xz)")


def test_an_artifact_slower_than_dense_is_flagged_in_the_table():
    report = sample_report()
    for artifact, slower in zip(report["artifacts"], [False, False, True], strict=True):
        artifact["slower_than_dense"] = slower
    lines = format_table(report).splitlines()
    assert "SLOWER" in lines[5] and "SLOWER" not in lines[3] + lines[4]
    assert (
        sum(
            "SLOWER" in line
            for line in format_markdown(report).splitlines()
            if line.startswith("|")
        )
        == 1
    )


def test_missing_values_show_as_a_dash():
    report = sample_report()
    report["artifacts"][2]["latency_ms_b1_p95"] = None
    row = format_table(report).splitlines()[5]
    assert " - " in f" {row} "


def test_the_csv_has_the_documented_columns_and_one_row_per_artifact():
    rows = list(csv.DictReader(io.StringIO(format_csv(sample_report()))))
    assert list(rows[0]) == CSV_FIELDS
    assert [r["name"] for r in rows] == ["dense", "pruned", "pruned-int8-dynamic"]
    assert float(rows[1]["accuracy"]) == 0.885 and int(rows[1]["bytes"]) == 100_000
    assert (
        rows[1]["deploy_form"] == ".onnx.xz" and rows[1]["deploy_path"] == "deploy/pruned.onnx.xz"
    )


def test_the_markdown_report_has_the_table_and_the_stages():
    text = format_markdown(sample_report())
    assert text.startswith("# tiny\n")
    assert "measured in onnxruntime 1.0 on cpu" in text
    assert "| artifact | val % | test % |" in text
    assert "| pruned-int8-dynamic | 88.75% |" in text
    assert "| train | 1.2 | no |" in text and "| prune | 0.5 | yes |" in text


def test_reports_are_written_and_read_back_from_the_run_folder(tmp_path):
    report = sample_report()
    write_reports(tmp_path, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json", "report.md"]
    assert load_report(tmp_path) == report
    assert (tmp_path / "report.md").read_text() == format_markdown(report)
    assert (tmp_path / "report.csv").read_bytes().decode() == format_csv(report)


def test_loading_a_report_from_a_folder_without_one_is_a_clear_error(tmp_path):
    with pytest.raises(CompressError, match="is .* a finished run folder"):
        load_report(tmp_path)


def test_the_delta_is_shown_with_its_interval():
    report = sample_report()
    report["artifacts"][1]["accuracy_delta_ci"] = [-2.6, -0.4]
    table = format_table(report)
    assert "-1.50 [-2.60, -0.40]" in table
    assert "-1.50 [-2.60, -0.40]" in format_markdown(report)
    assert "+0.00" in table  # an artifact without an interval shows the delta alone
    assert format_delta(0.04, [-0.031, 0.12]) == "+0.04 [-0.03, +0.12]"
    assert format_delta(None, None) == "-"


def test_the_inputs_line_names_what_pruning_left_unused_and_is_silent_when_nothing_is():
    features = {"used": 2, "total": 3, "unit": "features", "names": ["a", "c"]}
    assert inputs_lines({"inputs": features}) == ["pruned model uses 2 of 3 features: a, c"]
    assert inputs_lines({"inputs": {"used": 2, "total": 3, "unit": "channels"}}) == [
        "pruned model uses 2 of 3 channels"
    ]
    assert inputs_lines({"inputs": {"used": 1, "total": 1, "unit": "channels"}}) == []
    assert inputs_lines({}) == []


def report_with_intervals() -> dict:
    report = sample_report()
    for row, ci in zip(
        report["artifacts"], [[0.0, 0.0], [-2.6, -0.4], [-2.41, -0.12]], strict=True
    ):
        row.update(
            accuracy_delta_ci=ci,
            latency_vs_dense=1.0,
            slower_than_dense=False,
            macs=101_632,
            weight_bytes=407_096,
            min_onnxruntime="1.12",
        )
    return report


def header_of(table: str) -> str:
    lines = table.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("---")) - 1]


@pytest.mark.parametrize("width", [80, 120])
def test_the_terminal_table_is_no_wider_than_the_terminal(width):
    table = format_table(report_with_intervals(), width)
    assert max(len(line) for line in table.splitlines()) <= width
    header = header_of(table)
    for column in ("artifact", "test %", "Δ pts", "deploy", "ratio", "status"):
        assert column in header
    assert "MACs" not in header and "weights held" not in header  # in --wide and report.md
    assert "compress report RUN_DIR --wide" in table


def test_a_wider_terminal_shows_more_of_the_main_columns():
    at_80, at_120 = (
        format_table(report_with_intervals(), 80),
        format_table(report_with_intervals(), 120),
    )
    assert "val %" in header_of(at_120) and "val %" not in header_of(at_80)
    assert "-1.50 [-2.60, -0.40]" in at_120 and "[-2.60" not in at_80
    assert "vs dense" in header_of(at_80) and "sparsity" in header_of(at_80)


def test_a_narrow_terminal_keeps_the_name_test_accuracy_size_and_a_shortened_status():
    report = report_with_intervals()
    report["artifacts"][1]["status"] = (
        "failed: logits differ from PyTorch by 1.23e-02 (tolerance 1.0e-04)"
    )
    table = format_table(report, 60)
    assert max(len(line) for line in table.splitlines()) <= 60
    assert header_of(table).split()[:3] == ["artifact", "test", "%"]
    assert "failed: logits" in table and "…" in table and "(tolerance 1.0e-04)" not in table
    assert "(tolerance 1.0e-04)" in format_table(report)  # the wide table has it whole


def test_a_slower_artifact_is_flagged_beside_vs_dense_in_the_compact_table():
    report = report_with_intervals()
    report["artifacts"][2].update(latency_vs_dense=1.8, slower_than_dense=True)
    rows = format_table(report, 100).splitlines()
    assert "1.80x SLOWER" in next(line for line in rows if line.startswith("pruned-int8-dynamic"))
    assert sum("SLOWER" in line for line in rows) == 1


def test_vs_dense_shows_its_interval_over_the_rounds_and_slower_only_where_flagged():
    report = report_with_intervals()
    report["artifacts"][1].update(
        latency_vs_dense=0.62, latency_vs_dense_low=0.58, latency_vs_dense_high=0.66
    )
    report["artifacts"][2].update(
        latency_vs_dense=1.31,
        latency_vs_dense_low=1.12,
        latency_vs_dense_high=1.45,
        slower_than_dense=True,
    )
    rows = format_table(report, 140).splitlines()
    pruned = next(line for line in rows if line.startswith("pruned "))
    assert "0.62x [0.58, 0.66]" in pruned and "SLOWER" not in pruned
    assert "1.31x [1.12, 1.45] SLOWER" in format_table(report, 140)
    assert "vs dense [95% CI over the rounds]" in format_table(report, 140)
    assert "0.62x [0.58, 0.66]" in format_markdown(report)
    dense = next(line for line in rows if line.startswith("dense "))
    assert "1.00x" in dense and "[" not in dense.split("1.00x")[1][:3]  # no interval measured


def test_the_wide_table_has_every_column():
    from compress.report import COLUMNS

    header = header_of(format_table(report_with_intervals()))
    assert all(title in header for key, title, _ in COLUMNS if key != "budget")
    assert "budget" not in header  # only with a [budget]


def test_with_a_budget_the_table_says_which_artifacts_fit_and_what_the_others_miss():
    report = report_with_intervals()
    for artifact in report["artifacts"]:
        artifact["budget"] = {"fits": False, "misses": ["ram 12.3 KB over"]}
    report["artifacts"][1]["budget"] = {"fits": True, "misses": []}
    table = format_table(report, 160)
    assert "budget" in header_of(table)
    names = [a["name"] for a in report["artifacts"]]
    rows = {
        line.split()[0]: line for line in table.splitlines() if line and line.split()[0] in names
    }
    assert [name for name, line in rows.items() if " fits " in line] == [names[1]]
    assert sum("ram 12.3 KB over" in line for line in rows.values()) == len(names) - 1


def test_compress_report_fits_the_terminal_and_wide_shows_every_column(tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    write_reports(tmp_path, report_with_intervals())
    runner = CliRunner(env={"COLUMNS": "80"})
    compact = runner.invoke(main, ["report", str(tmp_path)])
    wide = runner.invoke(main, ["report", str(tmp_path), "--wide"])
    assert compact.exit_code == 0 and wide.exit_code == 0
    assert max(len(line) for line in compact.output.splitlines()) <= 80
    assert "MACs" not in compact.output and "p50 ms" not in compact.output
    assert all(
        title in header_of(wide.output)
        for title in ("MACs", "weights held", "p50 ms", "gzip", "ort ≥")
    )
    assert (
        runner.invoke(main, ["report", str(tmp_path), "--format", "md"]).output.count("MACs") == 1
    )


def table_report() -> dict:
    report = sample_report()
    report.update(pipeline="wine", model="logreg")
    report["dataset"] = {
        "name": "wine/train.csv",
        "train_samples": 106,
        "val_samples": 36,
        "test_samples": 36,
        "kind": "table",
    }
    return report


def test_a_csv_run_is_titled_by_its_file_and_counts_rows():
    assert format_table(table_report(), 80).splitlines()[0] == (
        "wine (logreg) on wine/train.csv, 36 validation and 36 test rows"
    )
    assert "on wine/train.csv (36 validation and 36 test rows)" in format_markdown(table_report())


def test_throughput_is_rows_per_second_for_tables_and_images_per_second_for_images():
    assert "rows/s" in header_of(format_table(table_report())) and "img/s" not in format_table(
        table_report()
    )
    assert "| rows/s |" in format_markdown(table_report())
    assert "img/s" in header_of(format_table(sample_report()))
    older = table_report()  # a report from before dataset.kind: its inputs say features
    del older["dataset"]["kind"]
    older["inputs"] = {"used": 2, "total": 3, "unit": "features", "names": ["a", "c"]}
    assert "rows/s" in header_of(format_table(older))
