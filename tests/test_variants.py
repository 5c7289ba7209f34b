"""Variants by name: the registry is what the config, the quantize stage, verify, parameter
counts, the compatibility table and the plots ask, and a new variant is one module (here,
the `Copy` class below) plus one registry line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.analysis.plot import _color, _order
from compress.config import ignored_by, load_pipeline, parse_pipeline
from compress.encode.compat import min_onnxruntime
from compress.encode.onnx_tools import get_metadata, parameter_counts, save_model, set_metadata
from compress.errors import CompressError, ConfigError
from compress.pipeline import run_pipeline
from compress.variants import (
    StoredCount,
    Variant,
    for_artifact,
    get_variant,
    in_order,
    list_variants,
    register_variant,
    registry,
)


# --- a new variant: this class, and one registry line (in the fixture below)
class Copy(Variant):
    """The float model as it is (a baseline for the real variants)."""

    name = "copy"
    suffix = "copy"
    order = 90
    lossless = True
    color = "tab:brown"
    contrib_ops = {"CopyOp": "1.20"}

    @classmethod
    def count_stored(cls, inits, min_dims):
        return StoredCount(names={n for n in inits if n.endswith(".copy_note")})

    def write(self, source, target, context):
        model = onnx.load(str(source))
        set_metadata(model, {**get_metadata(model), "variant": target.stem})
        save_model(model, target)


@pytest.fixture
def copy_variant(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(list_variants()))  # undone after the test
    register_variant(Copy)  # the one registry line
    return Copy


def test_the_builtin_variants_are_registered_in_their_order():
    assert list(list_variants()) == [
        "dynamic",
        "static",
        "static-int4",
        "packed-int4",
        "packed",
        "codebook",
    ]
    assert [get_variant(v).suffix for v in list_variants()] == [
        "int8-dynamic",
        "int8-static",
        "int4-static",
        "int4-packed",
        "packed",
        "codebook",
    ]


def test_an_unknown_variant_lists_the_known_ones():
    with pytest.raises(
        CompressError,
        match=r"unknown quantize variant 'statik' \(did you mean 'static'\?\); "
        r"known: dynamic, static",
    ):
        get_variant("statik")
    with pytest.raises(
        ConfigError,
        match=r"quantize.variants.1: unknown quantize variant 'codebok' "
        r"\(did you mean 'codebook'\?\)",
    ):
        parse_pipeline({"quantize": {"variants": ["dynamic", "codebok"]}}, name="p")


def test_variants_are_written_after_what_they_need():
    assert in_order(["packed-int4", "dynamic"]) == ["static-int4", "packed-int4", "dynamic"]
    assert in_order(["dynamic", "static-int4", "packed-int4"]) == [
        "dynamic",
        "static-int4",
        "packed-int4",
    ]


def test_variants_that_need_each_other_are_refused(copy_variant, monkeypatch):
    monkeypatch.setattr(Copy, "needs", ("copy",))
    with pytest.raises(CompressError, match="need each other: copy -> copy"):
        in_order(["copy"])


def test_registering_a_name_or_a_suffix_twice_is_refused(copy_variant):
    class Other(Copy):
        pass

    with pytest.raises(ValueError, match="'copy' is registered twice"):
        register_variant(Other)
    Other.name = "other"
    with pytest.raises(ValueError, match="suffix 'copy' is 'copy''s already"):
        register_variant(Other)


def test_calibration_is_read_by_a_variant_that_needs_a_static_one():
    config = parse_pipeline({"quantize": {"variants": ["packed-int4"]}}, name="p")
    assert ignored_by(config, "quantize.calibration_samples") is None
    assert ignored_by(config, "quantize.packed.scales") is None
    config = parse_pipeline(
        {"quantize": {"variants": ["dynamic", "codebook"]}, "finetune": {"share": {"bits": 3}}},
        name="p",
    )
    assert "no static variant" in ignored_by(config, "quantize.calibration_method")


def test_the_packed_table_is_ignored_without_packed_int4():
    config = parse_pipeline({"quantize": {"variants": ["static-int4"]}}, name="p")
    assert ignored_by(config, "quantize.packed.scales") == (
        "quantize.variants has no packed-int4 or packed; [quantize] packed is read by it only"
    )
    assert ignored_by(config, "quantize.bits") == (
        "quantize.variants has no packed; [quantize] bits is read by it only"
    )


def test_files_are_matched_to_their_variant_by_its_suffix():
    assert for_artifact("pruned-int4-packed") is get_variant("packed-int4")
    assert for_artifact("pruned-inputs-int8-static") is get_variant("static")
    assert for_artifact("pruned-inputs") is None and for_artifact("dense") is None
    assert _color("dense-int8-dynamic") == get_variant("dynamic").color
    legend = ["pruned-codebook", "pruned-int8-static", "pruned", "dense", "pruned-int8-dynamic"]
    assert sorted(legend, key=_order) == [
        "dense",
        "pruned",
        "pruned-int8-dynamic",
        "pruned-int8-static",
        "pruned-codebook",
    ]


def model_with(initializers: list[onnx.TensorProto], node: onnx.NodeProto) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([node], "g", [x], [y], initializer=initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model


def test_parameter_counts_and_compatibility_ask_every_variant(copy_variant):
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    note = numpy_helper.from_array(np.ones((4, 4), np.float32), "w.copy_note")
    model = model_with(
        [weight, note],
        helper.make_node("CopyOp", ["x", "w", "w.copy_note"], ["y"], domain="com.microsoft"),
    )
    assert parameter_counts(model) == (16, 4)  # the note is the copy variant's auxiliary
    assert min_onnxruntime(model, "1.32.0") == "1.20"


def test_a_new_variant_runs_through_the_quantize_stage_and_verify(
    copy_variant, pipeline_file, tmp_path
):
    config = load_pipeline(pipeline_file({"quantize.variants": ["copy"]}))
    report = run_pipeline(config, tmp_path / "run")
    rows = {a["name"]: a for a in report["artifacts"]}
    assert list(rows) == ["dense", "pruned", "pruned-copy"]
    copied, pruned = rows["pruned-copy"], rows["pruned"]
    assert copied["status"] == "ok" and copied["accuracy"] == pruned["accuracy"]
    assert (
        copied["max_logit_diff"] <= pruned["max_logit_diff"] + 1e-6
    )  # held to the float tolerance
    assert (copied["params"], copied["nonzero_params"]) == (
        pruned["params"],
        pruned["nonzero_params"],
    )
    stage = json.loads((tmp_path / "run" / "quantize" / "stage.json").read_text())
    assert list(stage["metrics"]) == ["pruned-copy"]
    assert (
        get_metadata(onnx.load(str(tmp_path / "run" / "pruned-copy.onnx")))["variant"]
        == "pruned-copy"
    )
