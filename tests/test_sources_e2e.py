"""An image folder and a CSV table end to end: each artifact's accuracy in report.json equals
an evaluation that uses only the .onnx file, its metadata and the original files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from data_files import table_rows, write_csv, write_image_folder
from PIL import Image
from tiny_mnist import pipeline_text

from compress.cli import main

pytestmark = pytest.mark.slow


def run(pipeline: Path, out: Path) -> dict:
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def session_and_metadata(path: Path) -> tuple[ort.InferenceSession, dict, list[str]]:
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]),
        json.loads(meta["preprocessing"]),
        json.loads(meta["labels"]),
    )


def test_an_image_folder_run_is_verified_from_the_image_files_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    root = write_image_folder(
        tmp_path / "photos",
        {"cat": 24, "dog": 24, "fox": 24},
        test={"cat": 8, "dog": 8, "fox": 8},
        size=(10, 12),
    )
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        pipeline_text(
            None,
            data={
                "name": "imagefolder",
                "root": str(root),
                "image_size": [6, 8],
                "channels": 3,
                "batch_size": 16,
            },
            train={"epochs": 3, "lr": 0.1, "momentum": 0.5},
            model={"name": "simplenet", "kwargs": {"hidden": 8}},
        ).replace('[data]\nname = "mnist"\n', "[data]\n")
    )
    report = run(pipeline, tmp_path / "run")
    assert report["dataset"]["test_samples"] == 24 and report["dataset"]["val_samples"] > 0
    files = sorted((root / "test").rglob("*.png"))
    for artifact in report["artifacts"]:
        session, pre, labels = session_and_metadata(tmp_path / "run" / artifact["path"])
        assert labels == ["cat", "dog", "fox"] and pre["layout"] == "NCHW" and pre["size"] == [6, 8]
        h, w = pre["size"]
        mean = np.float32(pre["mean"])[:, None, None]
        std = np.float32(pre["std"])[:, None, None]
        correct = 0
        for path in files:
            image = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
            x = ((pixels * np.float32(pre["scale"]) - mean) / std)[None].astype(np.float32)
            logits = session.run(None, {"input": x})[0]
            correct += labels[int(logits.argmax())] == path.parent.name
        assert correct / len(files) == artifact["accuracy"], artifact["name"]


def test_a_csv_run_is_verified_from_the_csv_file_alone(tmp_path):
    rows = table_rows(200)
    write_csv(tmp_path / "train.csv", ["x1", "x2", "x3", "diagnosis"], rows[:150])
    write_csv(tmp_path / "test.csv", ["x1", "x2", "x3", "diagnosis"], rows[150:])
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        pipeline_text(
            None,
            data={
                "name": "csv",
                "train": "train.csv",
                "test": "test.csv",
                "label": "diagnosis",
                "batch_size": 16,
            },
            train={"epochs": 5, "lr": 0.1, "momentum": 0.5},
            model={"name": "logreg", "kwargs": None},
            prune={"threshold": 0.05},
        ).replace('[data]\nname = "mnist"\n', "[data]\n")
    )
    report = run(pipeline, tmp_path / "run")
    with open(tmp_path / "test.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for artifact in report["artifacts"]:
        session, pre, labels = session_and_metadata(tmp_path / "run" / artifact["path"])
        x = np.float32([[float(r[name]) for name in pre["features"]] for r in table])
        x = ((x - np.float32(pre["mean"])) / np.float32(pre["std"])).astype(np.float32)
        predicted = session.run(None, {"input": x})[0].argmax(1)
        accuracy = float(
            np.mean([labels[p] == r["diagnosis"] for p, r in zip(predicted, table, strict=True)])
        )
        assert accuracy == artifact["accuracy"], artifact["name"]
    assert report["artifacts"][0]["accuracy"] > 0.8
