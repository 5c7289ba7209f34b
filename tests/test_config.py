"""The pipeline file: defaults, validation, and error messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from compress.config import PipelineConfig, load_pipeline, parse_pipeline
from compress.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.toml"))


def config_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(data, name="test")
    return str(info.value)


def test_an_empty_pipeline_gets_the_documented_defaults():
    config = parse_pipeline({}, name="empty")
    assert config.name == "empty"
    assert config.model.name == "simplenet"
    assert config.data.name == "mnist" and config.data.batch_size == 64 and config.data.download
    assert config.train.epochs == 5 and config.train.optimizer == "sgd"
    assert config.train.l1.lambda_ == 0.0 and config.train.l1.method == "penalty"
    assert config.prune.method == "threshold" and config.prune.schedule == "oneshot"
    assert config.finetune.epochs == 2 and config.finetune.lr == 0.001
    assert config.quantize.variants == ["dynamic", "static"]
    assert config.export.opset == 17 and config.export.ir_version is None
    assert config.verify.tolerance == 1e-4


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_file_is_valid(path):
    config = load_pipeline(path)
    assert config.name == path.stem
    assert Path(config.base_dir) == path.parent


def test_the_tiny_test_pipeline_reads_back_as_written(tiny_pipeline, mnist_root):
    config = load_pipeline(tiny_pipeline)
    assert config.name == "tiny"
    assert config.model.kwargs == {"hidden": 16}
    assert config.train.l1.lambda_ == 1e-4
    assert config.data.root == str(mnist_root) and config.data.download is False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"epoch": 3}}, "train.epoch: unknown key; did you mean 'train.epochs'?"),
        ({"trian": {"epochs": 3}}, "trian: unknown section; did you mean 'train'?"),
        (
            {"train": {"l1": {"lamda": 1e-4}}},
            "train.l1.lamda: unknown key; did you mean 'train.l1.lambda'?",
        ),
        (
            {"prune": {"gradual": {"step": 3}}},
            "prune.gradual.step: unknown key; did you mean 'prune.gradual.steps'?",
        ),
        (
            {"quantize": {"varaints": ["dynamic"]}},
            "quantize.varaints: unknown key; did you mean 'quantize.variants'?",
        ),
        (
            {"prune": {"method": "magnitude", "amout": 0.9}},
            "prune.amout: unknown key; did you mean 'prune.amount'?",
        ),
        (
            {"prune": {"amount": 0.9}},
            "prune.amount: unknown key; it is a setting of method = 'channels' or 'magnitude'",
        ),
    ],
)
def test_unknown_keys_are_rejected_with_a_suggestion(data, expected):
    assert expected in config_error(data)


def test_an_unknown_prune_key_lists_the_keys_of_the_named_method():
    message = config_error({"prune": {"method": "magnitude", "bogus": 1}})
    assert (
        "known: enabled, method, layers, overrides, keep_inputs, schedule, gradual, amount, scope"
        in message
    )


def test_an_unknown_key_lists_the_known_keys_of_its_section():
    message = config_error({"verify": {"repetitons": 3}})
    assert (
        "known: threads, repetitions, rounds, slower_margin, throughput_batch, measure_ram, "
        "tolerance" in message
    )


@pytest.mark.parametrize(
    ("data", "key", "got"),
    [
        ({"train": {"epochs": "5"}}, "train.epochs", "(got '5')"),
        ({"train": {"epochs": 1.5}}, "train.epochs", "(got 1.5)"),
        ({"train": {"epochs": True}}, "train.epochs", "(got True)"),
        ({"finetune": {"lr": "0.01"}}, "finetune.lr", "(got '0.01')"),
        ({"data": {"download": "no"}}, "data.download", "(got 'no')"),
        ({"prune": {"method": "random"}}, "prune.method", "(got 'random')"),
        ({"quantize": {"variants": ["dynamic", "int2"]}}, "quantize.variants.1", "(got 'int2')"),
    ],
)
def test_wrong_types_name_the_key_and_the_value(data, key, got):
    message = config_error(data)
    assert message.startswith(f"{key}: ")
    assert got in message


@pytest.mark.parametrize(
    ("data", "key", "bound", "got"),
    [
        ({"train": {"lr": 0}}, "train.lr", "0", "0"),
        ({"train": {"epochs": -1}}, "train.epochs", "0", "-1"),
        ({"train": {"momentum": 1.0}}, "train.momentum", "1", "1.0"),
        ({"train": {"l1": {"lambda": -1e-4}}}, "train.l1.lambda", "0", "-0.0001"),
        ({"prune": {"method": "magnitude", "amount": 1.0}}, "prune.amount", "1", "1.0"),
        ({"prune": {"threshold": -0.1}}, "prune.threshold", "0", "-0.1"),
        ({"data": {"batch_size": 0}}, "data.batch_size", "0", "0"),
        ({"export": {"opset": 16}}, "export.opset", "17", "16"),
        ({"verify": {"repetitions": 0}}, "verify.repetitions", "0", "0"),
        ({"quantize": {"calibration_samples": 0}}, "quantize.calibration_samples", "0", "0"),
        ({"finetune": {"distill": {"alpha": 1.5}}}, "finetune.distill.alpha", "1", "1.5"),
    ],
)
def test_out_of_range_values_name_the_key_the_bound_and_the_value(data, key, bound, got):
    message = config_error(data)
    assert message.startswith(f"{key}: ") and message.endswith(f" (got {got})")
    assert bound in message.removeprefix(f"{key}: ").removesuffix(f" (got {got})")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"prune": {"schedule": "gradual"}},
            "prune: schedule = 'gradual' needs method = 'channels' or 'magnitude'",
        ),
        (
            {"prune": {"method": "magnitude", "overrides": {"net.1": {"threshold": 0.1}}}},
            "prune: overrides.net.1 needs amount for method = 'magnitude'",
        ),
        (
            {"model": {"name": "simplenet", "path": "m.py"}},
            "model: set either name, or path and class, not both",
        ),
        ({"model": {"path": "m.py"}}, "model: path needs class"),
        ({"train": {"nesterov": True}}, "train: nesterov needs optimizer = 'sgd' and momentum > 0"),
        ({"train": {"distill": {"alpha": 0.5}}}, "train: distill needs a teacher"),
    ],
)
def test_cross_field_rules_are_checked(data, expected):
    assert expected in config_error(data)


def test_every_error_of_a_file_is_reported_at_once():
    message = config_error({"train": {"epoch": 3, "lr": -1}, "verify": {"repetitions": 0}})
    assert "train.epoch: unknown key" in message
    assert "train.lr: Input should be greater than 0" in message
    assert "verify.repetitions: Input should be greater than 0" in message


def test_a_file_error_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: train\.epoch: unknown key"):
        load_pipeline(path)


def test_toml_syntax_errors_are_config_errors(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_pipeline(path)


def test_a_missing_pipeline_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere.toml")


def test_values_are_literals_and_never_evaluated():
    # A string where a number belongs stays a string and is rejected, not computed.
    message = config_error({"train": {"lr": "1e-3 * 10"}})
    assert message.startswith("train.lr: ")


def test_sections_are_frozen():
    config = parse_pipeline({}, name="frozen")
    with pytest.raises(pydantic.ValidationError):
        config.train.epochs = 3


def test_overrides_return_a_validated_copy():
    config = parse_pipeline({"prune": {"threshold": 0.01}}, name="base")
    changed = config.with_overrides({"prune.threshold": 0.05, "finetune.epochs": 4})
    assert changed.prune.threshold == 0.05 and changed.finetune.epochs == 4
    assert config.prune.threshold == 0.01 and config.finetune.epochs == 2
    assert changed.name == "base"


def test_an_invalid_override_names_the_key():
    config = parse_pipeline({}, name="base")
    with pytest.raises(ConfigError, match="prune.amount: Input should be less than 1"):
        config.with_overrides({"prune.method": "magnitude", "prune.amount": 2.0})


def test_relative_paths_are_taken_from_the_pipeline_folder(tmp_path):
    path = tmp_path / "sub" / "p.toml"
    path.parent.mkdir()
    path.write_text('[data]\nroot = "data"\n')
    config = load_pipeline(path)
    assert config.resolve(config.data.root) == tmp_path / "sub" / "data"
    assert config.resolve("/abs/data") == Path("/abs/data")
    assert config.resolve(None) is None


def test_the_resolved_config_round_trips_through_its_dump():
    config = parse_pipeline(
        {"train": {"l1": {"lambda": 1e-4, "method": "proximal"}}, "model": {"name": "lenet5"}},
        name="rt",
    )
    again = PipelineConfig.model_validate(config.model_dump(by_alias=True))
    assert again == config
    assert again.train.l1.method == "proximal"


def test_packed_and_dynamic_quantize_options_are_checked():
    assert "packed-int4" in str(config_error({"quantize": {"variants": ["packed-int5"]}}))
    assert "quantize.packed.scales" in config_error({"quantize": {"packed": {"scales": "float8"}}})
    assert "quantize.dynamic_op_types" in config_error({"quantize": {"dynamic_op_types": ["Relu"]}})
    assert "quantize.dynamic_op_types" in config_error({"quantize": {"dynamic_op_types": []}})
