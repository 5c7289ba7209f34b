"""The tool's own errors: the CLI prints their message on one line and exits with
`exit_status` (2: the user's to fix; 3: an output failed the tool's own check)."""


class CompressError(Exception):
    """A mistake in the user's input (pipeline file, data, model): shown without a traceback."""

    exit_status = 2


class ConfigError(CompressError):
    """The pipeline file is invalid."""


class DataError(CompressError):
    """A data set is missing, truncated or corrupt."""


class TrainingError(CompressError):
    """Training diverged (NaN or infinite loss)."""


class RunLockedError(CompressError):
    """Another run holds the run directory."""


class ExportError(CompressError):
    """The model cannot be exported to ONNX (an operation or control flow the exporter lacks)."""


class IntegrityError(CompressError):
    """An output failed the tool's own check (pruned weights moved, a package does not unpack
    to its file): not the user's mistake, but reported the same way, with exit status 3."""

    exit_status = 3
