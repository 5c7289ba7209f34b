"""The package version, written once (pyproject.toml reads it through compress.__version__)."""

__version__ = "0.1.0"
