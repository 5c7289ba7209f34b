"""The bar of the many-run commands: the dense model of the pipeline as written.

    reference = Reference(config, data)        # the pipeline as written (tune: with its --set)
    reference.made_by(variant_config)          # True: that variant makes the same dense model
    bar = dense_val(report, "reference")       # a run's dense validation accuracy

A variant that changes training (a stronger L1 penalty, fewer epochs) changes its own dense
model too; judged against that one, it could lower its own bar. So `sweep`, `tune` and
`search` measure every drop against the dense model of the pipeline as written, on the
validation split. When a variant makes that very dense model (the same train-stage key and
export settings), its dense artifact is the reference and nothing more runs; otherwise the
pipeline as written runs once as `<out>/reference`, sharing the stage cache.
"""

from __future__ import annotations

from compress.config import PipelineConfig
from compress.data import Dataset
from compress.errors import CompressError
from compress.results import DENSE, find_artifact

REFERENCE = "reference"  # the run folder of the pipeline as written, when no variant is it
BAR = "Δ pts against the dense model of the pipeline as written, on validation"


class Reference:
    """What makes the pipeline's dense model: its train-stage key and export settings."""

    def __init__(self, config: PipelineConfig, data: Dataset):
        self.data = data
        self.identity = self._identity(config)

    def _identity(self, config: PipelineConfig) -> tuple[str, dict]:
        from compress.pipeline import stage_keys

        return stage_keys(config, self.data)["train"], config.export.model_dump(mode="json")

    def made_by(self, config: PipelineConfig) -> bool:
        return self._identity(config) == self.identity


def dense_val(report: dict, where: str) -> float:
    """The validation accuracy of a run's `dense` artifact (measured in onnxruntime)."""
    dense = find_artifact(report["artifacts"], DENSE)
    if dense is None or dense.get("val_accuracy") is None:
        raise CompressError(
            f"{where}: report.json has no dense artifact with val_accuracy; "
            "the budget needs a compress that measures accuracy on the validation split"
        )
    return dense["val_accuracy"]
