"""The run folder stays trustworthy: atomic files, one run at a time, no stale reuse,
corrupt or hostile files detected, numerical faults stopped and reported.

Most tests start from a copy of one finished run (the `baseline` fixture) of a tiny
pipeline whose model is a user file, so that editing that file can be tested too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from tiny_mnist import files_under, tiny_arrays, write_pipeline, write_tiny_mnist

import compress.pipeline
from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.config import load_pipeline
from compress.data import load_dataset
from compress.encode.onnx_tools import get_metadata, save_model, set_metadata
from compress.errors import CompressError
from compress.files import sha256_file, write_json
from compress.pipeline import STAGE_NAMES, run_pipeline, stage_keys

NET_PY = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, hidden=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):
        return self.net(x)


class Unstable(Net):
    \"\"\"Its logits turn to NaN from the `blowup_at`-th training step on.\"\"\"

    def __init__(self, num_classes=10, blowup_at=43):
        super().__init__(num_classes)
        self.blowup_at = blowup_at
        self.steps = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.steps += 1
            if self.steps >= self.blowup_at:
                out = out * float("nan")
        return out
"""
USER_MODEL = {"name": None, "path": "net.py", "class": "Net", "kwargs": {"hidden": 16}}
SECTIONS = {"model": USER_MODEL, "quantize": {"variants": ["dynamic", "static"]}}


class Touch:
    """Unpickling this runs code: it creates `path` (what a hostile checkpoint would do)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def make_project(folder: Path, data: Path, **sections) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(NET_PY)
    return write_pipeline(folder / "pipeline.toml", data, **{**SECTIONS, **sections})


def run(pipeline: Path, out: Path, **kwargs) -> dict:
    return run_pipeline(load_pipeline(pipeline), out_dir=out, progress=False, **kwargs)


def stage_records(run_dir: Path) -> dict[str, dict]:
    return {s: json.loads((run_dir / s / "stage.json").read_text()) for s in STAGE_NAMES}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> SimpleNamespace:
    """One finished run; `replaced` holds every path a file was renamed onto during it."""
    root = tmp_path_factory.mktemp("baseline")
    data = write_tiny_mnist(root / "data")
    pipeline = make_project(root / "project", data)
    replaced: list[Path] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        replaced.append(Path(dst))
        return real_replace(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", spy)
        report = run(pipeline, root / "run")
    return SimpleNamespace(
        root=root, data=data, pipeline=pipeline, run=root / "run", report=report, replaced=replaced
    )


@pytest.fixture
def run_copy(baseline, tmp_path) -> Path:
    """A copy of the baseline run folder to damage."""
    return Path(shutil.copytree(baseline.run, tmp_path / "run"))


def cached_flags(report: dict) -> dict[str, bool]:
    return {s["name"]: s["cached"] for s in report["stages"]}


# --- atomic files


@pytest.mark.slow
def test_every_file_is_written_atomically(baseline):
    """Each file of the run folder got there by a rename (atomic_path), except the lock and the
    log."""
    written = {p for p in baseline.run.rglob("*") if p.is_file()} - {
        baseline.run / ".lock",
        baseline.run / "run.log",
    }
    assert {p.name for p in written} >= {
        "model.pt",
        "last.pt",
        "stage.json",
        "dense.onnx",
        "report.json",
    }
    assert written <= set(baseline.replaced)


@pytest.mark.slow
def test_files_are_readable_like_any_other(baseline):
    """atomic_path's temporary files are private (0600); the final files follow the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.json", "dense.onnx", "train/model.pt"):
        assert (baseline.run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.slow
def test_rerun_reuses_every_stage_and_removes_stale_temp_files(baseline, run_copy):
    stale = [run_copy / "train" / ".model.pt.k1ll3d.tmp", run_copy / ".dense.onnx.k1ll3d.tmp"]
    # another run folder inside this one, maybe being written right now
    other = [run_copy / "other" / ".lock", run_copy / "other" / ".dense.onnx.w0rk1ng.tmp"]
    for path in stale + other:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    report = run(baseline.pipeline, run_copy)
    assert all(cached_flags(report).values())
    assert report["artifacts"] == baseline.report["artifacts"]
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in other)


# --- one run per folder


@pytest.mark.slow
def test_a_locked_run_folder_is_refused(baseline, tmp_path):
    """A second process holds the folder's lock: the run says so, exits 2, writes nothing."""
    out = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom compress.files import locked_dir\n"
            f"with locked_dir({str(out)!r}):\n"
            "    print('locked', flush=True)\n    sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = files_under(out)
        result = CliRunner().invoke(
            main, ["run", str(baseline.pipeline), "--out", str(out), "--no-progress"]
        )
    finally:
        holder.communicate(timeout=30)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: run directory {out} is in use by another run (pid {holder.pid}); "
        "wait for it to finish or choose another --out\n"
    )
    assert files_under(out) == before == {".lock"}


# --- the cache never reuses what changed


@pytest.mark.slow
def test_stage_keys_cover_every_input(baseline, monkeypatch):
    """Each input changes the key of the stage that reads it and of every stage after it."""
    config = load_pipeline(baseline.pipeline)
    data = load_dataset("mnist", baseline.data, download=False)
    base = stage_keys(config, data)

    def changed(keys: dict[str, str]) -> list[str]:
        return [s for s in STAGE_NAMES if keys[s] != base[s]]

    assert stage_keys(config, data) == base
    assert changed(stage_keys(config.with_overrides({"data.eval_batch_size": 250}), data)) == []
    assert changed(stage_keys(config.with_overrides({"train.lr": 0.2}), data)) == list(STAGE_NAMES)
    assert changed(stage_keys(config.with_overrides({"data.seed": 1}), data)) == list(STAGE_NAMES)
    assert changed(stage_keys(config.with_overrides({"data.shift": 2}), data)) == list(STAGE_NAMES)
    # shift = 0 (the default) written out keeps the keys of runs made before the key existed
    assert changed(stage_keys(config.with_overrides({"data.shift": 0}), data)) == []
    assert changed(stage_keys(config.with_overrides({"prune.threshold": 0.03}), data)) == list(
        STAGE_NAMES[1:]
    )
    assert changed(stage_keys(config.with_overrides({"export.opset": 18}), data)) == [
        "export",
        "quantize",
        "verify",
    ]
    assert changed(stage_keys(config.with_overrides({"verify.tolerance": 1e-3}), data)) == [
        "verify"
    ]
    # data files: one label changed
    labels = tiny_arrays()["train-labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    other = load_dataset(
        "mnist",
        write_tiny_mnist(Path(baseline.root) / "data-edited", train_labels=labels),
        download=False,
    )
    assert changed(stage_keys(config, other)) == list(STAGE_NAMES)
    # the package version
    monkeypatch.setattr(compress.pipeline, "__version__", "99.0")
    assert changed(stage_keys(config, data)) == list(STAGE_NAMES)


def test_a_stage_s_code_revision_is_part_of_its_key(tiny_pipeline, tiny_data, monkeypatch):
    """Train and finetune measure BatchNorm statistics again since revision 1: a run folder
    or cache made by the older code (same settings, revision 0) is not reused."""
    config = load_pipeline(tiny_pipeline)
    keys = stage_keys(config, tiny_data)
    revisions = {s.name: s.revision for s in compress.pipeline.STAGES}
    assert revisions["train"] >= 1 and revisions["finetune"] >= 1
    older = tuple(dataclasses.replace(s, revision=0) for s in compress.pipeline.STAGES)
    monkeypatch.setattr(compress.pipeline, "STAGES", older)
    assert [s for s in STAGE_NAMES if stage_keys(config, tiny_data)[s] == keys[s]] == []


@pytest.mark.slow
def test_editing_the_model_file_reruns_everything(baseline, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(baseline.pipeline.parent, project)
    run_dir = Path(shutil.copytree(baseline.run, tmp_path / "run"))
    with open(project / "net.py", "a") as f:
        f.write("\n# a comment is enough: the model's source is part of the key\n")
    report = run(project / "pipeline.toml", run_dir)
    assert not any(cached_flags(report).values())
    assert stage_records(run_dir)["train"]["key"] != stage_records(baseline.run)["train"]["key"]
    # Same arithmetic, so the same results: the rerun is for safety, not a different model.
    assert report["training"] == baseline.report["training"]


@pytest.mark.slow
def test_changing_the_data_reruns_training(baseline, tmp_path):
    labels = tiny_arrays()["train-labels"].copy()
    labels[:300] = (labels[:300] + 1) % 10  # 10% of the labels wrong
    data = write_tiny_mnist(tmp_path / "data", train_labels=labels)
    pipeline = make_project(tmp_path / "project", data)
    run_dir = Path(shutil.copytree(baseline.run, tmp_path / "run"))
    report = run(pipeline, run_dir)
    assert not any(cached_flags(report).values())
    # same images: the stratified validation part may move by a sample or two with the labels
    same = ("name", "test_samples")
    assert {k: report["dataset"][k] for k in same} == {
        k: baseline.report["dataset"][k] for k in same
    }
    assert sum(report["dataset"][k] for k in ("train_samples", "val_samples")) == 2000
    assert (run_dir / "train/model.pt").read_bytes() != (
        baseline.run / "train/model.pt"
    ).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["model", "model-and-epoch-checkpoint"])
def test_a_corrupt_checkpoint_is_detected_and_recomputed(baseline, run_copy, damage, caplog):
    caplog.set_level(logging.INFO)
    model = run_copy / "train" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    if damage == "model-and-epoch-checkpoint":
        last = run_copy / "train" / "last.pt"
        last.write_bytes(last.read_bytes()[:-100])
    report = run(baseline.pipeline, run_copy)
    assert (
        "train: output train/model.pt is missing or changed; running the stage again" in caplog.text
    )
    if damage == "model-and-epoch-checkpoint":
        assert "ignoring unreadable epoch checkpoint" in caplog.text
    else:
        assert "resuming from epoch 2 checkpoint" in caplog.text
    # The recomputed model is the same to the byte, so what was made from it stays valid.
    assert model.read_bytes() == (baseline.run / "train/model.pt").read_bytes()
    assert cached_flags(report) == {s: s != "train" for s in STAGE_NAMES}
    assert report["artifacts"] == baseline.report["artifacts"]


@pytest.mark.slow
def test_a_stage_made_from_other_inputs_is_not_reused(baseline, run_copy, caplog):
    """export/pruned.onnx is replaced by a different file, consistently recorded (as a rerun
    of export that gave other bytes would leave it): what was made from it runs again."""
    caplog.set_level(logging.INFO)
    path = run_copy / "export" / "pruned.onnx"
    proto = onnx.load(str(path))
    set_metadata(proto, {"note": "re-exported"})
    save_model(proto, path)
    record = json.loads((run_copy / "export" / "stage.json").read_text())
    record["outputs"]["export/pruned.onnx"] = sha256_file(path)
    write_json(run_copy / "export" / "stage.json", record)

    report = run(baseline.pipeline, run_copy)
    assert (
        "quantize: the files it was made from have changed; running the stage again" in caplog.text
    )
    assert cached_flags(report) == {
        "train": True,
        "prune": True,
        "finetune": True,
        "export": True,
        "quantize": False,
        "verify": False,
    }
    quantized = onnx.load(str(run_copy / "pruned-int8-dynamic.onnx"))
    assert get_metadata(quantized)["note"] == "re-exported"


# --- untrusted files


@pytest.mark.slow
def test_a_hostile_epoch_checkpoint_is_never_unpickled(baseline, run_copy, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    marker = tmp_path / "code-ran"
    torch.save({"key": Touch(marker)}, run_copy / "train" / "last.pt")
    (run_copy / "train" / "model.pt").unlink()
    run(baseline.pipeline, run_copy)
    assert not marker.exists()
    assert "ignoring unreadable epoch checkpoint" in caplog.text
    assert (run_copy / "train/model.pt").read_bytes() == (
        baseline.run / "train/model.pt"
    ).read_bytes()


def test_a_hostile_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save({"format": "compress-checkpoint/1", "model": Touch(marker)}, path)
    with pytest.raises(
        CompressError,
        match=r"refusing to load checkpoint .*model\.pt: it refers to the Python object getattr, "
        r"which only full unpickling can load",
    ):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
def test_hostile_weights_are_refused_before_anything_is_written(baseline, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"net.1.weight": Touch(marker)}, tmp_path / "weights.pt")
    pipeline = make_project(
        tmp_path / "project",
        baseline.data,
        model={**USER_MODEL, "weights": str(tmp_path / "weights.pt")},
    )
    before = files_under(tmp_path)
    result = CliRunner().invoke(
        main, ["run", str(pipeline), "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: refusing to load weights file {tmp_path / 'weights.pt'}: "
        "it refers to the Python object getattr"
    )
    assert not marker.exists()
    assert files_under(tmp_path) == before


# --- numerical faults


@pytest.mark.slow
@pytest.mark.parametrize("cause", ["nan-logits", "huge-lr"])
def test_a_diverging_loss_stops_training(baseline, tmp_path, cause):
    if cause == "nan-logits":
        # 19 steps per epoch (1,801 of 2,000 images; 199 validation): the 32nd is epoch 2, step 13
        sections = {"model": {**USER_MODEL, "class": "Unstable", "kwargs": {"blowup_at": 32}}}
        message = (
            r"train: loss became nan in epoch 2 at step 13 of 19; lower the learning rate or the "
            r"L1 lambda; the last good checkpoint \(epoch 1\) is kept in .*train/last\.pt"
        )
    else:
        sections = {"train": {"epochs": 2, "lr": 1e9, "momentum": 0.9, "l1": {"lambda": 1e-4}}}
        message = (
            r"train: loss became (nan|inf) in epoch 1 at step \d+ of 19; lower the learning rate "
            r"or the L1 lambda"
        )
    pipeline = make_project(tmp_path / "project", baseline.data, **sections)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(f"error: {message}", lines[0]), lines
    assert not (out / "train" / "stage.json").exists() and not (out / "report.json").exists()
    if cause == "nan-logits":
        state = torch.load(out / "train" / "last.pt", weights_only=True)
        assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow
def test_an_export_that_disagrees_with_pytorch_fails_the_run(baseline, run_copy, monkeypatch):
    """onnxruntime's logits are compared with PyTorch's; make PyTorch's differ by 0.5."""
    import compress.stages.verify

    real_predict = compress.stages.verify.predict
    monkeypatch.setattr(
        compress.stages.verify, "predict", lambda model, x: real_predict(model, x) + 0.5
    )
    argv = [
        "run",
        str(baseline.pipeline),
        "--out",
        str(run_copy),
        "--no-progress",
        "--from",
        "verify",
    ]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "error: verification failed for dense, pruned"
    report = json.loads((run_copy / "report.json").read_text())
    status = {a["name"]: a["status"] for a in report["artifacts"]}
    for name in ("dense", "pruned"):  # float exports are held to the tolerance
        assert status.pop(name).startswith(
            "failed: logits differ from PyTorch by 5.00e-01 (tolerance "
        )
    assert set(status.values()) == {"ok"}  # quantized ones are expected to differ


# --- what the report says


def onnx_weights(proto: onnx.ModelProto) -> dict[tuple[int, ...], np.ndarray]:
    """The 2-D initializers (weight matrices, stored [in, out]; float, or int8 when quantized) by
    shape."""
    found = {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2:
            assert array.shape not in found, f"two weights of shape {array.shape}"
            found[array.shape] = array
    return found


@pytest.mark.slow
def test_reported_sparsity_is_the_zeros_in_the_onnx_files(baseline):
    run_dir, report = baseline.run, baseline.report
    records = stage_records(run_dir)
    model, masks, _ = load_checkpoint(run_dir / "finetune" / "model.pt")
    pruned = int(sum((~m).sum() for m in masks.values()))
    assert (
        records["prune"]["metrics"]["zero_weights"]
        == records["finetune"]["metrics"]["zero_weights"]
        == pruned
        > 0
    )

    weights = onnx_weights(onnx.load(str(run_dir / "pruned.onnx")))
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == pruned
    assert report["training"]["pruned_sparsity"] == round(
        zeros / sum(w.size for w in weights.values()), 6
    )
    layers = {name: m for name, m in model.named_modules() if name in masks}
    for name, module in layers.items():
        assert np.array_equal(weights[tuple(module.weight.T.shape)] == 0, (~masks[name]).T.numpy())

    assert [a["name"] for a in report["artifacts"]] == [
        "dense",
        "pruned",
        "pruned-int8-dynamic",
        "pruned-int8-static",
    ]
    for artifact in report["artifacts"]:
        proto = onnx.load(str(run_dir / artifact["path"]))
        params = nonzero = 0
        for init in proto.graph.initializer:
            array = numpy_helper.to_array(init)
            if (
                array.ndim == 0
                or init.name.endswith(("_scale", "_zero_point"))
                or array.dtype == np.int64
            ):
                continue
            params, nonzero = params + array.size, nonzero + int(np.count_nonzero(array))
        assert (artifact["params"], artifact["nonzero_params"]) == (params, nonzero), artifact[
            "name"
        ]
        stored = onnx_weights(proto)  # sparsity: zeros among the weights, biases apart
        weights = sum(w.size for w in stored.values())
        assert artifact["sparsity"] == round(
            1 - sum(int(np.count_nonzero(w)) for w in stored.values()) / weights, 6
        )
        if artifact["name"] == "pruned":
            assert (
                artifact["sparsity"] == report["training"]["pruned_sparsity"]
            )  # the table says what the log says
        if artifact["name"] != "dense":  # every pruned weight is a stored 0 in every variant
            stored = onnx_weights(proto)
            for name, module in layers.items():
                assert (
                    stored[tuple(module.weight.T.shape)][(~masks[name]).T.numpy()] == 0
                ).all(), artifact["name"]
