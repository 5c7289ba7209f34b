"""A model that learned in training but answers at chance once exported is no `ok`: its
status is a warning (run table, report.json, the log), and `compress run --strict` makes
it an error with exit status 3 after writing the report."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from compress.cli import main
from compress.stages.verify import chance_warning

# Learns in training mode (logistic regression); in evaluation mode, which is what is
# exported, every image gets the same logits: the model behind the reported 10.00%.
CONSTANT_IN_EVAL = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return logits if self.training else logits * 0
"""


def test_the_warning_names_the_accuracy_chance_and_training_accuracy():
    labels = np.repeat(np.arange(10), 1000)
    assert chance_warning(0.1, 0.89, labels) == (
        "warning: at chance (10.0% on test, chance 10.0%) while training accuracy is 89%"
    )
    assert chance_warning(0.5, 0.89, labels) is None


def test_an_artifact_at_chance_is_a_warning_and_an_error_with_strict(pipeline_file, tmp_path):
    (tmp_path / "net.py").write_text(CONSTANT_IN_EVAL)
    pipeline = pipeline_file(
        {
            "model": {"path": str(tmp_path / "net.py"), "class": "Net"},
            "finetune.epochs": 0,
            "quantize.variants": ["dynamic"],
        }
    )
    run_dir = tmp_path / "run"
    args = ["run", str(pipeline), "--out", str(run_dir), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output  # a warning, not a failure
    report = json.loads((run_dir / "report.json").read_text())
    train = json.loads((run_dir / "train" / "stage.json").read_text())["metrics"]
    train_accuracy = train["epochs"][-1]["train_accuracy"]
    assert train_accuracy > 0.7
    for artifact in report["artifacts"]:
        assert artifact["status"].startswith("warning: at chance (")
        assert artifact["status"].endswith(f"while training accuracy is {train_accuracy:.0%}")
    table = result.stdout.splitlines()
    assert sum("warning: at chance" in line for line in table) == len(report["artifacts"])
    dense = report["artifacts"][0]
    assert f"warning: dense: at chance ({dense['accuracy']:.1%} on test" in result.stderr
    assert "at chance" in (run_dir / "run.log").read_text()

    strict = CliRunner().invoke(main, [*args, "--strict"])  # all cached: only the verdict differs
    assert strict.exit_code == 3
    assert strict.stderr.splitlines()[-1] == (
        "error: --strict: dense, pruned, pruned-int8-dynamic at chance while training accuracy "
        "is high (the warnings above; the report is written)"
    )
    assert (run_dir / "report.json").is_file()
