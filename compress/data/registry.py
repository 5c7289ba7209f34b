"""Data sources by name: the values of [data] name.

    @register_source
    class Idx(DataSource): names = ("mnist", "fashion-mnist", "kmnist"); ...

    source = get_source("mnist")()            # a DataSource; get_source("x") lists the known ones
    list_sources()                            # {"mnist": Idx, ..., "csv": Csv}, in BUILTIN order

The built-in sources are the modules named in BUILTIN, imported on first use, explicitly:
a new built-in source is one module in compress/data/ and its name added there.
"""

from __future__ import annotations

import importlib
import typing

from compress.errors import CompressError
from compress.registry import unknown_name_message
from compress.sections import DataCommon

# The registry holds compress.data.base.DataSource subclasses (typed `type` here) but imports
# none of them, so compress.config can look a [data] name up (the source modules are
# imported on first lookup, as pruning methods are) without an import cycle.

BUILTIN = (
    "idx",
    "torchvision_sets",
    "imagefolder",
    "csv_table",
    "arrays",
    "audiofolder",
)  # modules of compress.data, in listing order

_REGISTRY: dict[str, type] = {}
_loaded = False


def register_source(source: type) -> type:
    """Register a DataSource subclass under each of its `names` (usable as a class decorator)."""
    if not issubclass(source.Config, DataCommon):
        raise ValueError(
            f"data source {source.__name__}: its Config must subclass compress.config.DataCommon"
        )
    declared = typing.get_args(source.Config.model_fields["name"].annotation)
    for name in source.names:
        if name in _REGISTRY and _REGISTRY[name] is not source:
            raise ValueError(f"data source {name!r} is registered twice")
        if name not in declared:
            raise ValueError(f"data source {name!r}: its Config needs name: Literal[{name!r}, ...]")
    for name in source.names:
        _REGISTRY[name] = source
    return source


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"compress.data.{module}")


def _place(source: type) -> int:
    module = source.__module__.removeprefix("compress.data.")
    return BUILTIN.index(module) if module in BUILTIN else len(BUILTIN)


def list_sources() -> dict[str, type]:
    """Every [data] name -> its source: the built-in ones in BUILTIN's order (each source's
    names in its own order), then the others in the order registered."""
    _load_builtin()
    return dict(sorted(_REGISTRY.items(), key=lambda item: _place(item[1])))


def get_source(name: object) -> type:
    sources = list_sources()
    if not isinstance(name, str):
        raise CompressError(f"unknown data source {name!r}; known: {', '.join(sources)}")
    if name not in sources:
        raise CompressError(unknown_name_message("data source", name, list(sources)))
    return sources[name]
