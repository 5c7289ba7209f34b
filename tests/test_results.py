"""The typed results: report.json's keys are defined once, docs/reference.md documents
exactly those, and the comparisons (baseline, drop, delta, ratio) are computed one way."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.results import (
    DENSE,
    Artifact,
    DatasetSummary,
    Report,
    StageSummary,
    TrainingSummary,
    baseline_of,
    compression_ratio,
    delta_pts,
    drop_pts,
    keys_of,
    markdown_table,
)

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def row(name: str, accuracy: float, size: int = 1000, deploy: int = 100) -> Artifact:
    return {
        "name": name,
        "accuracy": accuracy,
        "bytes": size,
        "deploy_bytes": deploy,
        "gzip_bytes": deploy + 5,
        "xz_bytes": deploy,
    }


@pytest.mark.parametrize(("kind", "header"), [(Report, "key"), (Artifact, "artifact key")])
def test_the_reference_documents_exactly_the_typed_keys(kind, header):
    section = REFERENCE.read_text().split("\n## report.json\n", 1)[1].split("\n## ", 1)[0]
    assert markdown_table(kind, header) in section


def test_every_key_has_a_meaning():
    for kind in (Report, Artifact):
        assert all(keys_of(kind).values()), [k for k, v in keys_of(kind).items() if not v]


@pytest.mark.parametrize(
    ("key", "nested"),
    [("dataset", DatasetSummary), ("training", TrainingSummary), ("stages", StageSummary)],
)
def test_a_nested_section_names_each_of_its_keys(key, nested):
    meaning = keys_of(Report)[key]
    assert all(name in meaning for name in keys_of(nested)), meaning


def test_keys_added_by_the_report_are_optional_in_an_artifact_row():
    optional = set(keys_of(Artifact)) - Artifact.__required_keys__
    # and the interval verify adds once every artifact is measured, and codebook files' entropy
    assert optional == {"compression", "accuracy_delta", "accuracy_delta_ci", "code_entropy_bits"}


def test_the_baseline_is_the_named_artifact_or_else_the_first():
    rows = [row("pruned", 0.9), row(DENSE, 0.95)]
    assert baseline_of(rows)["name"] == DENSE
    assert baseline_of(rows, "pruned-int8-static")["name"] == "pruned"


def test_drop_delta_and_ratio_against_the_baseline():
    base, worse = row(DENSE, 0.9812, size=4000), row("pruned", 0.97, deploy=250)
    assert drop_pts(base, worse) == pytest.approx(1.12)
    assert delta_pts(base, worse) == pytest.approx(-1.12)
    assert drop_pts(base, row("x", 0.99)) < 0  # a gain is a negative drop
    assert compression_ratio(base, worse) == 16.0
    older = {k: v for k, v in worse.items() if k != "deploy_bytes"}  # reports before deploy_bytes
    assert compression_ratio(base, older) == 16.0


def test_the_report_s_columns_and_csv_fields_are_artifact_keys():
    from compress.report import COLUMNS, CSV_FIELDS

    keys = set(keys_of(Artifact))
    assert {key for key, _, _ in COLUMNS} <= keys and set(CSV_FIELDS) <= keys
