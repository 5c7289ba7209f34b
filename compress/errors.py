"""Errors that are the user's to fix: the CLI prints their message and exits with status 2."""


class CompressError(Exception):
    """A mistake in the user's input (pipeline file, data, model): shown without a traceback."""


class ConfigError(CompressError):
    """The pipeline file is invalid."""


class DataError(CompressError):
    """A data set is missing, truncated or corrupt."""


class TrainingError(CompressError):
    """Training diverged (NaN or infinite loss)."""


class RunLockedError(CompressError):
    """Another run holds the run directory."""
