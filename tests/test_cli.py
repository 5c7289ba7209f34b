"""The command line end to end, on the tiny pipeline: `compress run` once (shared by most
tests here), its artifacts checked independently, then the cache, and the other commands."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import re
import shutil
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.data import SPLIT_FILES
from compress.registry import describe, list_models
from compress.results import (
    Artifact,
    DatasetSummary,
    Report,
    StageSummary,
    TrainingSummary,
    keys_of,
)
from compress.stats import paired_bootstrap_ci, unpack_correct

ARTIFACTS = ["dense", "pruned", "pruned-int8-dynamic", "pruned-int8-static"]
STAGES = ["train", "prune", "finetune", "export", "quantize", "verify"]
CORE_COMMANDS = ["run", "validate", "report", "models"]


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def compress_run(pipeline: Path, out: Path):
    # an 80-column terminal, whatever the one running the tests
    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        main, ["run", str(pipeline), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def cached_by_stage(report: dict) -> dict[str, bool]:
    return {s["name"]: s["cached"] for s in report["stages"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pipeline_writer):
    """`compress run` of the tiny pipeline, from an empty working directory."""
    base = tmp_path_factory.mktemp("cli")
    pipeline = pipeline_writer(base / "tiny.toml")
    workdir = base / "cwd"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        result = compress_run(pipeline, base / "run")
    return {"result": result, "run_dir": base / "run", "pipeline": pipeline, "workdir": workdir}


@pytest.fixture(scope="module")
def report(finished_run) -> dict:
    return read_report(finished_run["run_dir"])


@pytest.fixture(scope="module")
def raw_test_split(mnist_arrays) -> tuple[np.ndarray, np.ndarray]:
    """Raw 0-255 test pixels [N, 1, 28, 28] and their labels, straight from the IDX files."""
    images, labels = SPLIT_FILES["test"]
    return mnist_arrays[images][:, None], mnist_arrays[labels]


@pytest.mark.slow
def test_run_exits_zero_and_prints_the_table(finished_run, report):
    out = finished_run["result"].stdout.splitlines()
    val = report["dataset"]["val_samples"]
    assert out[0] == f"tiny (simplenet) on mnist, {val} validation and 500 test samples"
    assert out[1].split()[0] == "artifact" and "deploy" in out[1]
    rows = [line.split() for line in out[3 : 3 + len(ARTIFACTS)]]
    assert [r[0] for r in rows] == ARTIFACTS
    assert all(r[-1] == "ok" for r in rows)
    assert any(
        line.startswith("report: ") and line.split()[1].endswith("report.md") for line in out
    )


@pytest.mark.slow
def test_run_prints_the_main_columns_within_the_terminal_width(finished_run):
    out = finished_run["result"].stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    header = out.splitlines()[1]
    assert "deploy" in header and "status" in header and "MACs" not in header
    assert "compress report RUN_DIR --wide" in out


@pytest.mark.slow
def test_export_quantize_and_verify_log_each_artifact_with_its_time(finished_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run["run_dir"], run_dir)
    caplog.set_level(logging.INFO)
    result = invoke(
        "run", finished_run["pipeline"], "--out", run_dir, "--from", "export", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    log = caplog.text
    seconds = r" in \d+\.\ds"
    for name in ("dense", "pruned"):
        assert re.search(rf"exported \S*{name}\.onnx \(\d+ bytes\){seconds}", log), name
    assert re.search(
        rf"quantized pruned\.onnx -> pruned-int8-static\.onnx \(\d+ bytes\){seconds}", log
    )
    for name in ARTIFACTS:
        assert re.search(rf"verified {name}\.onnx{seconds}: validation accuracy", log), name
        assert re.search(rf"latency {name}\.onnx: p50 [\d.]+ ms", log), name
    assert "timing 4 artifacts at batch 1" in log


@pytest.mark.slow
def test_run_writes_every_artifact_and_report(finished_run):
    run_dir = finished_run["run_dir"]
    for name in ARTIFACTS:
        assert (run_dir / f"{name}.onnx").is_file()
    for name in ("report.json", "report.md", "report.csv"):
        assert (run_dir / name).stat().st_size > 0
    for stage in STAGES:
        assert (run_dir / stage / "stage.json").is_file()
    assert not list(run_dir.glob("*.data"))  # every ONNX file is self-contained


@pytest.mark.slow
@pytest.mark.parametrize("name", ARTIFACTS)
def test_each_artifact_has_a_deployable_package_that_unpacks_to_it(finished_run, report, name):
    row = next(a for a in report["artifacts"] if a["name"] == name)
    run_dir = finished_run["run_dir"]
    package = run_dir / row["deploy_path"]
    assert package.name == f"{name}{row['deploy_form']}"
    assert package.stat().st_size == row["deploy_bytes"] == min(row["gzip_bytes"], row["xz_bytes"])
    unpack = gzip.decompress if row["deploy_form"] == ".onnx.gz" else lzma.decompress
    assert unpack(package.read_bytes()) == (run_dir / f"{name}.onnx").read_bytes()


@pytest.mark.slow
def test_each_artifact_states_what_a_deployer_needs(finished_run, report):
    from compress.encode.compat import lowest_ir_version, min_onnxruntime
    from compress.encode.onnx_tools import checksum_matches, get_metadata

    for row in report["artifacts"]:
        data = (finished_run["run_dir"] / row["path"]).read_bytes()
        model = onnx.load_from_string(data)
        metadata = get_metadata(model)
        assert checksum_matches(data), row["name"]  # the file's own sha256
        assert metadata["min_onnxruntime"] == row["min_onnxruntime"] == min_onnxruntime(model)
        assert (
            model.ir_version == row["ir_version"] == lowest_ir_version(model) < 10
            or "int4" in row["name"]
        )
        assert float(metadata["accuracy"]) == pytest.approx(row["accuracy"], abs=1e-6)
        assert float(metadata["val_accuracy"]) == pytest.approx(row["val_accuracy"], abs=1e-6)
        assert metadata["layout"] == "NCHW" and metadata["output"] == "logits"
        assert metadata["dataset"] == report["dataset"]["name"]


@pytest.mark.slow
def test_run_writes_nothing_outside_its_run_folder(finished_run):
    assert list(finished_run["workdir"].iterdir()) == []


@pytest.mark.slow
def test_report_json_has_exactly_the_keys_of_its_typed_definition(report):
    assert set(report) == set(keys_of(Report)) - {"budget"}  # with a [budget] only
    assert set(report["dataset"]) == set(keys_of(DatasetSummary))
    assert set(report["training"]) == set(keys_of(TrainingSummary))
    assert report["pipeline"] == "tiny"
    assert isinstance(report["config_hash"], str) and report["config_hash"]
    assert report["dataset"]["name"] == "mnist"
    dataset = report["dataset"]
    # the validation part is 10% of the 2,000 training images, stratified (whole samples per class)
    assert (
        dataset["test_samples"] == 500 and dataset["train_samples"] + dataset["val_samples"] == 2000
    )
    assert abs(dataset["val_samples"] - 200) <= 5
    assert report["device"] == "cpu"
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["onnx"] == onnx.__version__
    assert report["versions"]["onnxruntime"] == onnxruntime.__version__
    assert [a["name"] for a in report["artifacts"]] == ARTIFACTS
    for artifact in report["artifacts"]:
        assert set(artifact) == set(keys_of(Artifact)) - {
            "code_entropy_bits",  # codebook files only
            "budget",  # with a [budget] only
        }
        assert artifact["path"] == f"{artifact['name']}.onnx"
        assert 0.0 <= artifact["accuracy"] <= 1.0
        assert artifact["status"] == "ok"
        assert 0 < artifact["latency_ms_b1_p50"] <= artifact["latency_ms_b1_p95"]
        assert artifact["throughput"] > 0 and artifact["gzip_bytes"] > 0
    assert [s["name"] for s in report["stages"]] == STAGES
    for stage in report["stages"]:
        assert set(stage) == set(keys_of(StageSummary))
        assert stage["cached"] is False and stage["seconds"] >= 0


@pytest.mark.slow
def test_the_run_learns_and_prunes(report):
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert by_name["dense"]["accuracy"] > 0.7
    assert by_name["dense"]["sparsity"] == 0.0
    assert by_name["pruned"]["sparsity"] > 0.2
    assert by_name["pruned"]["nonzero_params"] < by_name["dense"]["nonzero_params"]
    assert by_name["pruned"]["params"] == by_name["dense"]["params"]
    assert by_name["pruned"]["gzip_bytes"] < by_name["dense"]["gzip_bytes"]
    for name in ("dense", "pruned"):
        assert by_name[name]["agreement"] == 1.0 and by_name[name]["max_logit_diff"] <= 1e-4
    for name in ("pruned-int8-dynamic", "pruned-int8-static"):
        assert abs(by_name[name]["accuracy"] - by_name["pruned"]["accuracy"]) <= 0.02
        assert by_name[name]["bytes"] < by_name["pruned"]["bytes"] / 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ARTIFACTS)
def test_an_independent_evaluation_of_each_file_reproduces_the_report(
    finished_run, report, raw_test_split, name
):
    """Only the .onnx file and its metadata: preprocessing, labels; raw IDX pixels in."""
    path = finished_run["run_dir"] / f"{name}.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    pre = json.loads(metadata["preprocessing"])
    labels = json.loads(metadata["labels"])
    pixels, truth = raw_test_split
    x = ((pixels.astype(np.float32) * pre["scale"] - pre["mean"]) / pre["std"]).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    predicted = [labels[i] for i in logits.argmax(1)]
    accuracy = float(np.mean([p == str(t) for p, t in zip(predicted, truth, strict=True)]))

    row = next(a for a in report["artifacts"] if a["name"] == name)
    assert accuracy == row["accuracy"]
    # The interval's evidence: the same per-image correctness, kept as bits by verify.
    bits = np.load(finished_run["run_dir"] / "verify" / "correct.npz")
    correct = unpack_correct(bits[name], int(bits["count"]))
    np.testing.assert_array_equal(
        correct, [p == str(t) for p, t in zip(predicted, truth, strict=True)]
    )
    dense = unpack_correct(bits["dense"], int(bits["count"]))
    assert row["accuracy_delta_ci"] == list(paired_bootstrap_ci(correct, dense))
    low, high = row["accuracy_delta_ci"]
    assert low <= 100 * (accuracy - dense.mean()) <= high
    data = path.read_bytes()
    assert row["bytes"] == len(data) == path.stat().st_size
    assert row["gzip_bytes"] == len(gzip.compress(data, compresslevel=9, mtime=0))


@pytest.mark.slow
def test_pruned_weights_stay_zero_through_the_whole_run(finished_run):
    run_dir = finished_run["run_dir"]
    _, masks, _ = load_checkpoint(run_dir / "prune" / "model.pt")
    finetuned, _, _ = load_checkpoint(run_dir / "finetune" / "model.pt")
    assert masks and sum(int((~m).sum()) for m in masks.values()) > 1000
    modules = dict(finetuned.named_modules())
    for layer, keep in masks.items():
        assert torch.all(modules[layer].weight[~keep] == 0)
    for name in ("pruned", "pruned-int8-dynamic", "pruned-int8-static"):
        model = onnx.load(str(run_dir / f"{name}.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for layer, keep in masks.items():
            stored = inits.get(f"{layer}.weight", inits.get(f"{layer}.weight_quantized"))
            assert stored is not None, f"{name}: no weight for {layer}"
            assert (stored.T[~keep.numpy()] == 0).all(), f"{name}: {layer}"


@pytest.mark.slow
def test_a_second_identical_run_reuses_every_stage(finished_run, report, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run["run_dir"], run_dir)
    before = {name: sha256(run_dir / f"{name}.onnx") for name in ARTIFACTS}
    compress_run(finished_run["pipeline"], run_dir)
    again = read_report(run_dir)
    assert cached_by_stage(again) == dict.fromkeys(STAGES, True)
    assert again["total_seconds"] == 0
    assert {name: sha256(run_dir / f"{name}.onnx") for name in ARTIFACTS} == before
    assert [a["accuracy"] for a in again["artifacts"]] == [
        a["accuracy"] for a in report["artifacts"]
    ]
    assert again["config_hash"] == report["config_hash"]


@pytest.mark.slow
def test_force_retrains_from_scratch_instead_of_resuming(finished_run, report, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run["run_dir"], run_dir)
    result = invoke(
        "run",
        finished_run["pipeline"],
        "--out",
        run_dir,
        "--no-progress",
        "--force",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.output
    forced = read_report(run_dir)
    assert cached_by_stage(forced) == dict.fromkeys(STAGES, False)
    train = json.loads((run_dir / "train" / "stage.json").read_text())
    assert train["metrics"]["resumed_from_epoch"] == 0
    assert [a["accuracy"] for a in forced["artifacts"]] == [
        a["accuracy"] for a in report["artifacts"]
    ]


@pytest.mark.slow
def test_changing_a_finetune_setting_reruns_finetune_and_later_stages_only(
    finished_run, report, pipeline_writer, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run["run_dir"], run_dir)
    pruned_before = sha256(run_dir / "pruned.onnx")
    pipeline = pipeline_writer(tmp_path / "tiny.toml", {"finetune.lr": 0.02})
    compress_run(pipeline, run_dir)
    changed = read_report(run_dir)
    assert cached_by_stage(changed) == {
        "train": True,
        "prune": True,
        "finetune": False,
        "export": False,
        "quantize": False,
        "verify": False,
    }
    assert changed["config_hash"] != report["config_hash"]
    assert sha256(run_dir / "pruned.onnx") != pruned_before


def test_validate_accepts_the_tiny_pipeline(tiny_pipeline):
    result = invoke("validate", tiny_pipeline)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("ok (tiny: simplenet on mnist)")


def test_validate_rejects_a_bad_pipeline_naming_the_key(pipeline_file):
    result = invoke("validate", pipeline_file({"train.epoch": 3}, name="bad"))
    assert result.exit_code == 2
    assert "train.epoch: unknown key; did you mean 'train.epochs'?" in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_validate_rejects_an_unknown_model(pipeline_file):
    result = invoke("validate", pipeline_file({"model.name": "lenet6"}, name="bad"))
    assert result.exit_code == 2
    assert "unknown model 'lenet6'" in result.stderr


@pytest.mark.slow
def test_report_prints_the_table_of_a_finished_run(finished_run):
    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        main, ["report", str(finished_run["run_dir"])]
    )  # as run's
    assert result.exit_code == 0, result.output
    table = slice(0, 3 + len(ARTIFACTS))  # title, header, rule, one row per artifact
    assert result.stdout.splitlines()[table] == finished_run["result"].stdout.splitlines()[table]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "csv", "md"])
def test_report_prints_every_format(finished_run, report, fmt):
    result = invoke("report", finished_run["run_dir"], "--format", fmt)
    assert result.exit_code == 0, result.output
    run_dir = finished_run["run_dir"]
    if fmt == "json":
        assert json.loads(result.stdout) == report
    elif fmt == "csv":
        expected = (run_dir / "report.csv").read_bytes().decode().replace("\r\n", "\n")
        assert result.stdout.replace("\r\n", "\n").rstrip("\n") == expected.rstrip("\n")
    else:
        assert result.stdout.rstrip("\n") == (run_dir / "report.md").read_text().rstrip("\n")


def test_report_of_a_folder_that_is_not_a_run_fails_clearly(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 2
    assert f"{tmp_path / 'report.json'} does not exist" in result.stderr
    assert "a finished run folder?" in result.stderr


def test_models_lists_every_registered_model():
    result = invoke("models")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [*list_models(), "torchvision:<name>"]
    for line, factory in zip(lines, list_models().values(), strict=False):
        assert line.endswith(describe(factory))


def test_the_main_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: ")
    assert set(CORE_COMMANDS) <= set(main.commands)
    for name in main.commands:
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_for_each_option(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.startswith("Usage: ")
        and f" {command} [OPTIONS]" in result.stdout.splitlines()[0]
    )
    for param in main.commands[command].params:
        if isinstance(param, click.Option):
            assert param.help, f"{command} {param.opts[0]} has no help text"
            assert param.opts[-1] in result.stdout


def test_run_help_documents_every_option():
    text = invoke("run", "--help").stdout
    for option in (
        "--out",
        "--data-root",
        "--device",
        "--force",
        "--from",
        "--no-progress",
        "--threads",
    ):
        assert option in text
    assert "PIPELINE" in text


def test_version_is_printed():
    from compress import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout
