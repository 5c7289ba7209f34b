"""The typed results: report.json's keys are defined once, docs/reference.md documents
exactly those, and the comparisons (baseline, drop, delta, ratio) are computed one way;
sweep.json, tune.json and search.json are typed too, with names that say which split an
accuracy is on."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from typed_json import mismatches

from compress.results import (
    DENSE,
    Artifact,
    Budget,
    DatasetSummary,
    Report,
    Search,
    SearchArtifact,
    SearchPoint,
    SearchReference,
    SearchTrial,
    StageSummary,
    Sweep,
    SweepPoint,
    SweepReference,
    SweepVariant,
    TrainingSummary,
    Tune,
    TuneBest,
    TunePoint,
    TuneReference,
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
    # and the intervals verify adds once every artifact is measured, codebook files' entropy
    assert optional == {
        "compression",
        "accuracy_delta",
        "accuracy_delta_ci",
        "latency_vs_dense_low",
        "latency_vs_dense_high",
        "code_entropy_bits",
        *("flash_bytes", "peak_activation_bytes", "peak_activation_tensors", "ram_bytes"),
        "measured_ram_bytes",
        "budget",  # with a [budget] only
    }  # and the memory keys, which reports before them lack


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


# ------------------------------------------------ sweep.json, tune.json, search.json

MANY_RUN = (
    Budget,
    Sweep,
    SweepReference,
    SweepVariant,
    SweepPoint,
    Tune,
    TunePoint,
    TuneBest,
    TuneReference,
    Search,
    SearchReference,
    SearchTrial,
    SearchArtifact,
    SearchPoint,
)


def nested_keys(kind: type) -> set[str]:
    """Every key of a TypedDict and of those inside it."""
    keys = set()
    for key, hint in get_type_hints(kind).items():
        keys.add(key)
        for inner in [hint, *get_args(hint), *(a for arg in get_args(hint) for a in get_args(arg))]:
            if isinstance(inner, type) and hasattr(inner, "__required_keys__"):
                keys |= nested_keys(inner)
    return keys


@pytest.mark.parametrize("kind", MANY_RUN)
def test_every_key_of_the_many_run_outputs_has_a_meaning(kind):
    assert all(keys_of(kind).values()), [k for k, v in keys_of(kind).items() if not v]


@pytest.mark.parametrize("kind", [Sweep, Tune, Search])
def test_an_accuracy_says_its_split_and_the_frontier_has_one_name(kind):
    keys = nested_keys(kind)
    assert "accuracy" not in keys and "front" not in keys
    assert {k for k in keys if "accuracy" in k} <= {
        "val_accuracy",
        "test_accuracy",
        "dense_val_accuracy",
        "reference_val_accuracy",
    }
    assert kind is Tune or "frontier" in keys


def test_the_checker_names_what_differs_from_a_typed_definition():
    budget = {"max_drop": 0.5, "chosen": "a", "ties": [], "closest": None}
    assert mismatches(budget, Budget) == []
    assert mismatches({**budget, "max_drop": 1}, Budget) == []  # a whole number is a float
    assert mismatches({k: v for k, v in budget.items() if k != "ties"}, Budget) == [
        "$: missing 'ties' (Budget)"
    ]
    assert mismatches({**budget, "front": []}, Budget) == ["$: 'front' is no key of Budget"]
    assert mismatches({**budget, "ties": ["a", 2]}, Budget) == ["$.ties[1]: 2 is not str"]
    assert mismatches({**budget, "chosen": 1.5}, Budget)[0].startswith("$.chosen: 1.5 is none of")
    assert mismatches({**budget, "max_drop": True}, Budget) == ["$.max_drop: True is not float"]
